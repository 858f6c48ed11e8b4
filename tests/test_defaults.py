"""Each default lives in one place, the schema (fitnas.config): params.yaml repeats them, and must agree."""

from __future__ import annotations

from pathlib import Path

import yaml

from fitnas import config
from fitnas.predictors import GCNPredictor, TrainingRecipe
from fitnas.spaces import mobilenet, nb201

ROOT = Path(__file__).resolve().parents[1]


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_params_yaml_repeats_the_schema_defaults_exactly():
    written = dict(_leaves(yaml.safe_load((ROOT / "params.yaml").read_text())))
    schema = dict(_leaves(config.Params().model_dump()))
    unknown = sorted(set(written) - set(schema))
    assert not unknown, f"params.yaml has keys the schema does not know: {unknown}"
    differ = {key: (value, schema[key]) for key, value in written.items() if value != schema[key]}
    assert not differ, f"params.yaml (left) and the schema's defaults (right) disagree: {differ}"


def test_constructors_take_their_defaults_from_the_schema():
    settings = config.Predictor()
    gcn = GCNPredictor(nb201.SPACE)
    assert (gcn.hidden, gcn.layers) == (settings.hidden, settings.layers)
    assert gcn.recipe == TrainingRecipe.from_settings(settings) == TrainingRecipe.default()
    layout = mobilenet.ChainSpace().layout
    assert {name: getattr(layout, name) for name in mobilenet.LAYOUT_FIELDS} == {
        name: tuple(v) if isinstance(v, list) else v for name, v in config.Mobilenet().model_dump().items()
    }


def test_one_budget_class():
    from fitnas import search

    assert search.Budget is config.Budget
    assert config.Params().budget.describe() == "unconstrained"
    assert config.Budget(flops=10.0).limits() == {"flops": 10.0}


def test_the_schema_names_exactly_the_registered_predictors_and_spaces():
    import typing

    from fitnas import predictors, spaces

    assert typing.get_args(config.Predictor.model_fields["kind"].annotation) == predictors.KINDS
    assert set(typing.get_args(config.Space.model_fields["name"].annotation)) == set(spaces.BUILDERS)
