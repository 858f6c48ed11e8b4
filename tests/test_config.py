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


def problems(tmp_path, patch: dict) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(patch))
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    return str(err.value)


@pytest.mark.parametrize(
    "patch, expected",
    [
        # wrong type or out of range: the key, the value, what is allowed and the default
        ({"supernet": {"epochs": 0}}, "supernet.epochs = 0: must be greater than 0; allowed: a whole number > 0 (default 4)"),
        ({"supernet": {"momentum": 1.5}}, "supernet.momentum = 1.5: must be less than 1; allowed: a number in [0, 1) (default 0.9)"),
        ({"budget": {"flops": "lots"}}, "budget.flops = 'lots': must be a valid number; allowed: null or a number > 0"),
        ({"retrain": {"augment": "maybe"}}, "retrain.augment = 'maybe': must be a valid boolean, unable to interpret input; allowed: true or false"),
        ({"seed": 1.5}, "seed = 1.5: must be a valid integer"),
        ({"rankcheck": {"archs": 2}}, "rankcheck.archs = 2: must be greater than or equal to 4; allowed: a whole number >= 4 (default 50)"),
        ({"predictor": {"baselines": ["mlp", "xgb"]}}, "predictor.baselines[1] = 'xgb': must be one of 'gcn', 'mlp', 'rf', 'params' or 'multifidelity'"),
        ({"anchors": {"n": 3}}, "anchors.n = 3: is 3; the fit cross-validates its weights on the anchors and needs at least 8: set anchors.n to 0"),
        ({"anchors": {"n": 300}}, "anchors.n = 300 is more than sample.n = 60; the anchors are trained among the sampled networks"),
        ({"supernet": 5}, "supernet: is 5, but it is a section of keys: channels, cells, epochs"),
        # a misspelt choice or key: did you mean
        ({"predictor": {"kind": "gnc"}}, "predictor.kind = 'gnc': must be one of 'gcn', 'mlp', 'rf', 'params' or 'multifidelity' (default 'gcn'); did you mean 'gcn'?"),
        ({"space": {"name": "darts"}}, "space.name = 'darts': must be one of 'nb201'"),
        ({"supernet": {"epochz": 3}}, "supernet.epochz: unknown key (set to 3); did you mean supernet.epochs? allowed keys in supernet: channels,"),
        ({"supernett": {"epochs": 3}}, "supernett: unknown key (set to {'epochs': 3}); did you mean supernet? allowed keys at the top level: seed,"),
        ({"retrain": {"zzz": 1}}, "retrain.zzz: unknown key (set to 1); allowed keys in retrain: epochs,"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(tmp_path, patch, expected):
    assert expected in problems(tmp_path, patch)


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"space": {"mobilenet": {"widths": [8, 16], "depths": [2]}}}, "one value per stage"),
        ({"space": {"mobilenet": {"kernels": [4]}}}, "space.mobilenet.kernels"),
        ({"search": {"method": "random"}}, "search.method"),
        ({"budget": {"latency_ms": -1}}, "budget.latency_ms"),
    ],
)
def test_bad_chain_space_and_search_settings_name_the_key(tmp_path, patch, expected):
    assert expected in problems(tmp_path, patch)


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"predictor": {"kind": "mlp"}}, "predictor.kind is 'mlp' and predictor.baselines ['mlp', 'rf', 'params'] lists it too"),
        ({"predictor": {"baselines": ["rf", "rf"]}}, "predictor.baselines ['rf', 'rf'] lists rf more than once"),
        ({"sample": {"n": 11}}, "sample.n = 11 with predictor.holdout = 0.2 leaves 9 samples to fit on (2 held out)"),
        ({"sample": {"n": 100}, "predictor": {"holdout": 0.95}}, "leaves 5 samples to fit on (95 held out)"),
        ({"sample": {"n": 6000}}, "sample.n = 6000 is more than the 5260 distinct networks of space 'nb201'"),
        ({"sample": {"n": 5250}}, "sample.n + rankcheck.archs = 5250 + 50 is more than the 5260 distinct networks"),
        ({"data": {"train_limit": 500}}, "4 x 256 = 1024 calibration images, but data.train_limit = 500"),
        ({"data": {"format": "npz"}}, "data.format is 'npz' but data.root is null"),
    ],
)
def test_inconsistent_combinations_are_named(tmp_path, patch, expected):
    assert expected in problems(tmp_path, patch)


def test_every_problem_is_reported_at_once(tmp_path):
    text = problems(tmp_path, {"supernet": {"epochs": 0, "lr": -1}, "budget": {"flopz": 3}})
    assert text.startswith(f"{tmp_path / 'params.yaml'} has 3 problem(s):")
    assert "supernet.epochs = 0" in text and "supernet.lr = -1" in text and "budget.flopz: unknown key" in text


def test_the_smallest_consistent_settings_pass(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"sample": {"n": 12}, "predictor": {"kind": "rf", "baselines": ["params"]}}))
    assert config.load(path).sample.n == 12


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("supernet: [1, 2\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(bad)


@pytest.mark.parametrize(
    "patch, expected",
    [
        # YAML's true is not the number 1, and 3.0 epochs is not 3 (issue 18).
        ({"supernet": {"epochs": True}}, "supernet.epochs = true: must be a valid integer; allowed: a whole number > 0"),
        ({"supernet": {"epochs": 3.0}}, "supernet.epochs = 3.0: must be a valid integer"),
        ({"supernet": {"lr": True}}, "supernet.lr = true: must be a valid number"),
        ({"space": {"mobilenet": {"stem_stride": True}}}, "space.mobilenet.stem_stride = true: must be a number, not true or false"),
        ({"space": {"mobilenet": {"strides": [1, True, 1, 1, 1, 1]}}}, "space.mobilenet.strides[1] = true: must be a number"),
        # inf and nan are refused here, not at the first training step
        ({"supernet": {"lr": float("inf")}}, "supernet.lr = inf: must be a finite number"),
        ({"budget": {"flops": float("nan")}}, "budget.flops = nan: must be a finite number"),
        ({"seed": -1}, "seed = -1: must be greater than or equal to 0"),
        ({"seed": 2**40}, "seed = 1099511627776: must be less than 2147483648"),
        ({"threads": 0}, "threads = 0: must be greater than 0"),
        ({"mlflow": {"experiment": ""}}, "mlflow.experiment = '': must not be empty"),
        ({"mlflow": {"experiment": "  "}}, "mlflow.experiment = '  ': must not be empty"),
        ({"mlflow": {"model_name": "models:/x"}}, "mlflow.model_name = 'models:/x': must be null (the experiment's name) or a name"),
        ({"mlflow": {"model_name": ""}}, "mlflow.model_name = '': must be null"),
    ],
)
def test_strict_types_finite_numbers_and_ranges(tmp_path, patch, expected):
    assert expected in problems(tmp_path, patch)


def test_ints_still_pass_where_a_number_is_asked_for(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("budget:\n  flops: 400\nsupernet:\n  lr: 1\n")  # as `dvc exp run -S budget.flops=400` writes it
    p = config.load(path)
    assert p.budget.flops == 400 and p.supernet.lr == 1


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "is empty; restore it"),
        (b"# only a comment\n", "is empty; restore it"),
        (b"- 1\n- 2\n", "holds list [1, 2], not a mapping of keys"),
        (b"seed: 0\ndata:\n  root: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset"),
        (b"\xff\xfe s\x00e\x00", "is not UTF-8 text (byte 0xff at offset 0)"),
    ],
)
def test_empty_unreadable_or_non_mapping_files_are_named(tmp_path, content, expected):
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_folder_named_params_yaml(tmp_path):
    (tmp_path / "params.yaml").mkdir()
    with pytest.raises(config.ConfigError, match="cannot be read"):
        config.load(tmp_path / "params.yaml")
