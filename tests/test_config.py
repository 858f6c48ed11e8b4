from pathlib import Path

import pytest
import yaml

from fitnas import config

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_are_valid():
    params = config.load(ROOT / "params.yaml")
    assert params.space.name == "nb201"
    assert params.budget.flops is None


def test_every_schema_key_is_in_params_yaml():
    """params.yaml documents every setting: its keys are exactly the schema's."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    flat_file = set(config.flatten(config.Params.model_validate(raw)))
    assert flat_file == set(config.flatten(config.Params()))
    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
        return out
    assert keys(raw) == flat_file


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"supernet": {"epochs": 0}}, "supernet.epochs"),
        ({"supernet": {"epochz": 3}}, "supernet.epochz: unknown key"),
        ({"budget": {"flops": "lots"}}, "budget.flops"),
        ({"predictor": {"kind": "xgboost"}}, "predictor.kind"),
        ({"space": {"name": "darts"}}, "space.name"),
        ({"space": {"mobilenet": {"widths": [8, 16], "depths": [2]}}}, "one value per stage"),
        ({"space": {"mobilenet": {"kernels": [4]}}}, "space.mobilenet.kernels"),
        ({"search": {"method": "random"}}, "search.method"),
        ({"budget": {"latency_ms": -1}}, "budget.latency_ms"),
    ],
)
def test_bad_values_name_the_key(tmp_path, patch, expected):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(patch))
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert expected in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("supernet: [1, 2\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(bad)
