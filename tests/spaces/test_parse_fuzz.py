"""Random and mutated arch strings at every space's parser and at `fitnas describe`.

Only two outcomes are allowed: a valid arch (whose canonical string is the input,
up to surrounding whitespace) or a clean ArchError / exit status 1 with a message.
Every space registered in fitnas.spaces.BUILDERS is covered, each at its default layout.
"""

from __future__ import annotations

import random
import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fitnas.cli import app
from fitnas import spaces
from fitnas import strategies
from fitnas.spaces import BUILDERS
from fitnas.spaces.base import ArchError

NEEDED = ("parse", "to_str", "random_cell", "canonical")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spaces_with_parsers() -> list:
    params = []
    for name in BUILDERS:
        space = spaces.get(name)
        missing = [f for f in NEEDED if not hasattr(space, f)]
        marks = [pytest.mark.skip(reason=f"space {name} lacks {', '.join(missing)}")] if missing else []
        params.append(pytest.param(space, id=name, marks=marks))
    return params


def valid_strings(space) -> st.SearchStrategy[str]:
    return st.integers(0, 2**32 - 1).map(lambda seed: space.to_str(space.random_cell(random.Random(seed))))


# Characters an arch string is made of, plus ones that look alike or break parsers.
ALPHABET = st.sampled_from(list("|+~_0123456789abcnorskiptvglxe ") + ["\t", "\n", "\x00", "٠", "１", "-", "é", "\u200b"])


TOKENS = st.one_of(
    st.sampled_from(["", "0", "1", "2", "3", "00", "01", " 0", "0 ", "-0", "+0", "٠", "１", "none", "None", "skip",
                     "skip_connect ", "nor_conv_3x3", "NOR_CONV_3X3", "avg_pool_3x3", "conv", "|", "~", "+"]),
    st.text(ALPHABET, max_size=4),
)


@st.composite
def mutated(draw, space) -> str:
    text = draw(valid_strings(space))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "swap", "case", "truncate", "token"]))
        # Half the edits land next to a separator, where a lax parser would slip.
        edges = [k + d for k, c in enumerate(text) if c in "|+~" for d in (0, 1)] or [0]
        i = draw(st.one_of(st.integers(0, len(text)), st.sampled_from(edges)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        if kind == "token":  # one name or index between separators becomes another plausible one
            tokens = re.split(r"([|+~])", text)
            k = draw(st.integers(0, len(tokens) - 1))
            tokens[k] = draw(TOKENS)
            text = "".join(tokens)
        elif kind == "insert":
            text = text[:i] + draw(ALPHABET) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "replace":
            text = text[:i] + draw(ALPHABET) + text[j:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif kind == "swap":
            parts = text.split("|")
            a, b = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
            parts[a], parts[b] = parts[b], parts[a]
            text = "|".join(parts)
        elif kind == "case":
            text = text[:i] + text[i:j].upper() + text[j:]
        else:
            text = text[:i]
    return text


def any_text(space) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=120), st.text(ALPHABET, max_size=120), mutated(space), valid_strings(space))


def check_parse(space, text: str):
    """The parsed arch, or None after a clean ArchError; anything else fails the test."""
    try:
        arch = space.parse(text)
    except ArchError as err:
        assert str(err).strip(), "an ArchError must say what is wrong"
        return None
    assert space.to_str(arch) == text.strip(), "accepted a string that is not the arch's own form"
    assert space.parse(space.to_str(arch)) == arch
    return arch


@pytest.mark.parametrize("space", spaces_with_parsers())
def test_valid_strings_round_trip(space):
    @FUZZ
    @given(valid_strings(space))
    def run(text):
        assert check_parse(space, text) is not None

    run()


@pytest.mark.parametrize("space", spaces_with_parsers())
def test_parser_accepts_only_valid_archs(space):
    @FUZZ
    @given(any_text(space))
    def run(text):
        check_parse(space, text)

    run()


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tables")


runner = CliRunner()


def searched_space_project(space, folder):
    """What `fitnas describe` reads for a space it cannot tabulate: params naming it, the data's shape, a fitted graph network."""
    import numpy as np
    import torch
    import yaml

    from fitnas.data import splits
    from fitnas.predictors import GCNPredictor, gcn_state

    (folder / "params.yaml").write_text(yaml.safe_dump({"space": {"name": space.NAME}}))
    archs = space.sample(12, random.Random(0))
    predictor = GCNPredictor(space, hidden=8, layers=1, epochs=1, ensemble=1, validation=0).fit(archs, list(range(12)))
    (folder / "models").mkdir(exist_ok=True)
    torch.save(gcn_state(predictor), folder / "models" / "predictor.pt")
    splits.save_split(folder / "data/prepared/val.pt", np.zeros((4, 28, 28)), np.arange(4), [str(i) for i in range(10)])
    return ["--params", str(folder / "params.yaml")]


@pytest.mark.parametrize("space", spaces_with_parsers())
def test_describe_gives_a_clean_error_or_a_valid_arch(space, table_dir, monkeypatch):
    table = table_dir / f"{space.NAME}.csv"
    extra = []
    if not strategies.tabulated(space):  # its costs and prediction come from the params and the saved graph network
        monkeypatch.chdir(table_dir)
        extra = searched_space_project(space, table_dir)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(any_text(space))
    def run(text):
        arch = check_parse(space, text)
        canonical = space.to_str(space.canonical(arch)) if arch is not None else space.to_str(space.random_cell(random.Random(0)))
        pd.DataFrame({"arch": [canonical], "predicted_acc": [0.5], "flops_M": [1.0], "params_M": [0.1]}).to_csv(table, index=False)
        # --table applies to a tabulated space only (a searched one refuses it)
        source = ["--table", str(table)] if strategies.tabulated(space) else []
        result = runner.invoke(app, ["describe", *source, "--space", space.NAME, *extra, "--", text])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        if arch is None:
            assert result.exit_code == 1, result.output
            assert result.output.startswith("error: ") and "expected" in result.output
        else:
            assert result.exit_code == 0, result.output
            assert canonical in result.output and "predicted acc: " in result.output
            assert not strategies.tabulated(space) or "predicted acc: 0.5000" in result.output

    run()
