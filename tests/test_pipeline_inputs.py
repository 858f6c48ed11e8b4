"""The tables and files one stage hands the next: unreadable or malformed ones give one clear error."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from fitnas.pipeline import SamplesError, read_choice, read_lookup, read_samples
from fitnas.spaces import nb201


def samples_frame(n: int = 12) -> pd.DataFrame:
    archs = nb201.distinct()[:n]
    return pd.DataFrame({"arch": [nb201.to_str(a) for a in archs], "supernet_acc": 0.5, "flops_M": 1.0, "params_M": 0.1})


def test_a_good_samples_table_is_read(tmp_path):
    path = tmp_path / "samples.csv"
    samples_frame().to_csv(path, index=False)
    assert len(read_samples(path, nb201)) == 12


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "unreadable (EmptyDataError"),
        (b"\x00\xff\xfe binary \x00", "unreadable (UnicodeDecodeError"),
        (b"arch,supernet_acc\nx,1\n", "lacks columns ['flops_M', 'params_M']"),
    ],
)
def test_unreadable_samples_table(tmp_path, content, expected):
    path = tmp_path / "samples.csv"
    path.write_bytes(content)
    with pytest.raises(SamplesError, match=re.escape(expected)) as err:
        read_samples(path, nb201)
    assert "dvc repro sample" in str(err.value)
    assert path.read_bytes() == content  # nothing deleted or rewritten


@pytest.mark.parametrize("value, shown", [("n/a", "empty"), ("abc", "'abc'"), ("inf", "'inf'")])
def test_samples_table_with_a_bad_value_names_the_line(tmp_path, value, shown):
    frame = samples_frame()
    frame["supernet_acc"] = frame["supernet_acc"].astype(object)
    frame.loc[4, "supernet_acc"] = value
    path = tmp_path / "samples.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(SamplesError, match=re.escape(f"line 6: supernet_acc is {shown}, not a number")):
        read_samples(path, nb201)


def test_samples_table_with_a_bad_arch_names_the_line(tmp_path):
    frame = samples_frame()
    frame.loc[2, "arch"] = "|conv~0|"
    path = tmp_path / "samples.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(SamplesError, match=r"line 4: bad NAS-Bench-201 arch '\|conv~0\|'"):
        read_samples(path, nb201)


def test_too_few_samples(tmp_path):
    path = tmp_path / "samples.csv"
    samples_frame(5).to_csv(path, index=False)
    with pytest.raises(SamplesError, match="only 5 rows"):
        read_samples(path, nb201)


def test_lookup_table_missing_empty_or_broken(tmp_path):
    path = tmp_path / "lookup.csv"
    with pytest.raises(SamplesError, match="does not exist; run `dvc repro fit`"):
        read_lookup(path)
    path.write_text("arch,predicted_acc,flops_M,params_M\n")
    with pytest.raises(SamplesError, match="has no rows"):
        read_lookup(path)
    path.write_text("arch,predicted_acc,flops_M,params_M\na,0.5,inf,1\n")
    with pytest.raises(SamplesError, match="line 2: flops_M is 'inf', not a number"):
        read_lookup(path)


def test_choice_file(tmp_path):
    path = tmp_path / "choice.json"
    with pytest.raises(SamplesError, match="does not exist; re-run `dvc repro search`"):
        read_choice(path)
    path.write_text('{"arch": ')
    with pytest.raises(SamplesError, match="not valid JSON"):
        read_choice(path)
    path.write_text("[1, 2]")
    with pytest.raises(SamplesError, match="lacks the chosen arch"):
        read_choice(path)
    path.write_text(json.dumps({"arch": nb201.EXAMPLE, "predicted_acc": 0.9}))
    assert read_choice(path)["arch"] == nb201.EXAMPLE


def test_a_missing_gpu_is_a_clean_error(tmp_path, monkeypatch, capsys):
    import torch

    from fitnas.stages import supernet

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "params.yaml").write_text("device: cuda\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FITNAS_TRACKING", "off")
    with pytest.raises(SystemExit) as code:
        supernet.main("params.yaml")
    assert code.value.code == 1
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible; set device: auto" in err and "Traceback" not in err
