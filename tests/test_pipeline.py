"""End to end: `dvc repro` of the tiny configuration, MLflow's grouped runs, and a budget experiment."""

from __future__ import annotations

import json
import re
import sys

import pandas as pd
import pytest
import torch
import yaml

from conftest import run

pytestmark = pytest.mark.slow

STAGES = {"prepare", "supernet", "sample", "anchors", "fit", "latency", "search", "retrain"}


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w/.:]+)'", output))


@pytest.fixture(scope="module")
def reproduced(tiny_project):
    result = run([sys.executable, "-m", "dvc", "repro"], tiny_project)
    run(["git", "add", "-A"], tiny_project)
    run(["git", "commit", "-qm", "baseline"], tiny_project)
    return tiny_project, result.stdout


def test_repro_runs_every_stage_and_writes_every_output(reproduced):
    project, output = reproduced
    assert ran_stages(output) == STAGES
    for path in [
        "data/prepared/train.pt", "data/prepared/val.pt", "data/prepared/test.pt",
        "models/supernet.pt", "models/final.pt", "models/final.onnx",
        "results/samples.csv", "results/lookup.csv", "results/fit_holdout.csv",
        "results/choice.json", "results/topk.csv", "results/pareto.csv", "results/latency.csv",
        "results/candidates.csv", "models/predictor.pt",
        "metrics/supernet_history.csv", "metrics/retrain_history.csv",
        "plots/supernet_curves.png", "plots/fit_scatter.png", "plots/pareto.png", "plots/retrain_curves.png",
    ]:
        assert (project / path).is_file(), path

    samples = pd.read_csv(project / "results/samples.csv")
    assert len(samples) == 30 and samples.arch.is_unique
    assert set(samples.columns) >= {"arch", "supernet_acc", "supernet_loss", "flops_M", "params_M"}

    lookup = pd.read_csv(project / "results/lookup.csv")
    from fitnas.spaces import nb201

    assert len(lookup) == len(nb201.distinct()) and lookup.cells.sum() == 15625

    anchors = pd.read_csv(project / "results/anchors.csv")
    assert len(anchors) == 8 and set(anchors.arch) <= set(samples.arch) and anchors.accuracy.between(0, 1).all()
    truth = pd.read_csv(project / "results/truth.csv")
    assert set(truth.arch) == set(anchors.arch) and set(truth.seed) == {0}  # trained into the committed table

    fit = json.loads((project / "metrics/fit.json").read_text())
    assert fit["lookup_predictor"] == "multifidelity" and fit["anchors"] == 8
    for kind in ("gcn", "mlp", "rf", "params"):
        for metric in ("kendall_tau", "spearman_rho", "precision_top10"):
            assert -1.0 <= fit[f"{kind}.{metric}"] <= 1.0

    final = json.loads((project / "metrics/final.json").read_text())
    assert final.keys() >= {"test_acc", "flops_M", "params_M", "arch"}
    assert 0.0 <= final["test_acc"] <= 1.0
    choice = json.loads((project / "results/choice.json").read_text())
    assert final["arch"] == choice["arch"]
    assert final["flops_M"] == pytest.approx(choice["flops_M"], rel=1e-6)  # table costs = built network

    # The pipeline's own file; a bare `dvc status` also lists the rank check until it has run.
    status = run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], project)
    assert "up to date" in status.stdout


def untimed(metrics: dict) -> dict:
    # Timings, and the final network's measured latencies (metrics/final.json: measured_*), are measurements.
    return {k: v for k, v in metrics.items() if "seconds" not in k and not k.startswith("measured_")}


def test_a_second_run_from_clean_gives_identical_results(reproduced, tmp_path):
    """A fresh clone of the baseline, `dvc repro` from nothing: the same metrics, tables, plots and weights on CPU.

    Except the latency table: timings are measurements, not computations, so the
    table is versioned and pulled, as a user's CI would (`dvc pull latency`), not re-measured.
    """
    project, _ = reproduced
    clone = tmp_path / "clone"
    remote = tmp_path / "remote"
    run([sys.executable, "-m", "dvc", "remote", "add", "--local", "store", str(remote)], project)  # .dvc/config.local: untracked
    run([sys.executable, "-m", "dvc", "push", "-r", "store", "latency"], project)
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "models/supernet.pt").exists() and not (clone / "results/latency.csv").exists()
    run([sys.executable, "-m", "dvc", "remote", "add", "--local", "store", str(remote)], clone)
    run([sys.executable, "-m", "dvc", "pull", "-r", "store", "latency"], clone)
    result = run([sys.executable, "-m", "dvc", "repro"], clone)
    # The anchors' table is committed (not cached) and its deps are unchanged: nothing to train again.
    assert ran_stages(result.stdout) == STAGES - {"latency", "anchors"}
    for name in ("prepare", "supernet", "sample", "fit", "latency", "search", "final"):
        first, second = (json.loads((root / f"metrics/{name}.json").read_text()) for root in (project, clone))
        assert untimed(second) == untimed(first), name
    files = [p.relative_to(project) for folder in ("results", "metrics", "plots") for p in sorted((project / folder).iterdir())]
    assert len(files) > 15
    for path in files:
        if path.suffix == ".csv":
            # The random forest baseline (n_jobs=-1) sums its trees in thread order: the last bit of
            # its predictions may differ, so tables agree to 1e-9, not bit for bit.
            pd.testing.assert_frame_equal(pd.read_csv(clone / path), pd.read_csv(project / path), check_exact=False, rtol=1e-9)
        elif path.suffix == ".png" or path.name == "choice.json":
            assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    # torch.save writes a random id into every file, so weights and splits are compared as tensors.
    for path in ("models/supernet.pt", "models/final.pt", "data/prepared/train.pt", "data/prepared/test.pt"):
        first, second = (torch.load(root / path, weights_only=True) for root in (project, clone))
        tensors = first["model"] if "model" in first else {k: v for k, v in first.items() if isinstance(v, torch.Tensor)}
        for key, value in tensors.items():
            assert torch.equal((second["model"] if "model" in second else second)[key], value), (path, key)
    assert "up to date" in run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], clone).stdout
def test_dvc_plots_render_every_declared_plot(reproduced):
    project, _ = reproduced
    shown = run([sys.executable, "-m", "dvc", "plots", "show", "--json"], project)
    payload = json.loads(shown.stdout)
    # The rank check's plots (rankcheck/dvc.yaml) exist once it has run: the last test checks them.
    assert not payload.get("errors"), payload["errors"]  # the rank check declares no plots: nothing missing (issue 18)
    plots = payload["data"]
    declared = [next(iter(p)) if isinstance(p, dict) else p for p in yaml.safe_load((project / "dvc.yaml").read_text())["plots"]]
    for name in declared:
        assert plots.get(name), f"{name} rendered nothing"
    for name in declared:
        for plot in plots[name]:
            if plot["type"] == "vega":
                assert plot["content"]["data"]["values"], name
    pareto = next(plots[n][0]["content"]["data"]["values"] for n in declared if n.startswith("Pareto front"))
    chosen = json.loads((project / "results/choice.json").read_text())
    topk = [row for row in pareto if row["filename"] == "topk.csv"]
    assert topk[0]["arch"] == chosen["arch"]  # the template marks the first top-k row as the chosen one
    html = run([sys.executable, "-m", "dvc", "plots", "show", "-o", "plots_html"], project)
    assert (project / "plots_html/index.html").is_file(), html.stdout
    assert "vegaEmbed" in (project / "plots_html/index.html").read_text()


def test_dvc_checkout_and_plots_show_are_clean_after_a_default_run(reproduced):
    """README's way back after a failure, and the plots, with the rank check never run (issue 18)."""
    project, _ = reproduced
    checkout = run([sys.executable, "-m", "dvc", "checkout"], project, check=False)
    assert checkout.returncode == 0, checkout.stdout + checkout.stderr
    shown = run([sys.executable, "-m", "dvc", "plots", "show", "-o", "plots_checked"], project, check=False)
    assert shown.returncode == 0 and "failed to load" not in shown.stdout + shown.stderr, shown.stdout + shown.stderr


def test_threads_is_recorded_in_dvc_lock_and_metrics(reproduced):
    project, _ = reproduced
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for stage in ("supernet", "sample", "fit", "retrain"):
        assert lock[stage]["params"]["params.yaml"]["threads"] == 1, stage
    for name in ("supernet", "sample", "fit", "final"):
        assert json.loads((project / f"metrics/{name}.json").read_text())["threads"] == 1, name


def test_a_failed_exp_run_names_the_bad_value_and_the_way_back(reproduced):
    """README: after `dvc exp run -S key=bad` the bad value stays in params.yaml; git checkout + dvc checkout restore."""
    project, _ = reproduced
    try:
        failed = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "supernet.epochs=0"], project, check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "supernet.epochs = 0: must be greater than 0" in output and "git checkout params.yaml && dvc checkout" in output
        assert "epochs: 0" in (project / "params.yaml").read_text()  # DVC leaves the bad value there
    finally:
        run(["git", "checkout", "params.yaml"], project)
        run([sys.executable, "-m", "dvc", "checkout"], project)
    assert "up to date" in run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], project).stdout


def test_mlflow_groups_the_stages_under_one_parent(reproduced):
    project, _ = reproduced
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fitnas")
    parents = client.search_runs([experiment.experiment_id], "tags.`fitnas.role` = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.data.tags["fitnas.stage"] for c in children} == STAGES
    assert "test_acc" in parent.data.metrics and parent.data.params["supernet.epochs"] == "1"
    retrain = next(c for c in children if c.data.tags["fitnas.stage"] == "retrain")
    assert {"train_loss", "val_acc", "test_acc"} <= set(retrain.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(retrain.info.run_id)}
    assert {"final.pt", "final.onnx", "retrain_curves.png"} <= artifacts


def test_budget_experiment_reruns_only_search_and_retrain(reproduced):
    project, _ = reproduced
    lookup = pd.read_csv(project / "results/lookup.csv")
    before = json.loads((project / "results/choice.json").read_text())
    budget = round((float(lookup.flops_M.min()) + before["flops_M"]) / 2, 3)
    assert lookup.flops_M.min() <= budget < before["flops_M"], "the tiny run chose the cheapest network"

    result = run([sys.executable, "-m", "dvc", "exp", "run", "-S", f"budget.flops={budget}"], project)
    assert ran_stages(result.stdout) == {"search", "retrain"}
    after = json.loads((project / "results/choice.json").read_text())
    assert after["arch"] != before["arch"] and after["flops_M"] <= budget
    final = json.loads((project / "metrics/final.json").read_text())
    assert final["flops_M"] <= budget and final["budget_flops"] == budget

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fitnas")
    parents = client.search_runs([experiment.experiment_id], "tags.`fitnas.role` = 'parent'", order_by=["attributes.start_time DESC"])
    assert len(parents) == 2
    newest = parents[0]
    assert newest.data.params["budget.flops"] == str(budget)
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{newest.info.run_id}'")
    assert {c.data.tags["fitnas.stage"] for c in children} == {"search", "retrain"}


def test_impossible_budget_fails_cleanly_and_keeps_outputs(reproduced):
    project, _ = reproduced
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["budget"]["flops"] = 0.001
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = run([sys.executable, "stages/search.py"], project, check=False)
    finally:
        run(["git", "checkout", "params.yaml"], project)
    assert result.returncode == 1
    assert "no architecture meets the budget" in result.stderr and "Traceback" not in result.stderr
    assert "smallest available" in result.stderr
    assert (project / "results/lookup.csv").is_file()


def test_rankcheck_is_off_the_default_path_and_reports_every_ranking(reproduced):
    # Last in this module: it adds its own MLflow run, which the tests above count.
    project, output = reproduced
    assert "rankcheck" not in output
    result = run([sys.executable, "-m", "dvc", "repro", "rankcheck/dvc.yaml"], project)
    assert "Running stage 'rankcheck/dvc.yaml:rankcheck'" in result.stdout
    assert "rankcheck: 8 of 8 trainings to do (4 networks x 2 seeds; 0 in results/truth.csv)" in result.stdout

    from fitnas.rankcheck import RANKERS

    table = pd.read_csv(project / "results/rankcheck.csv")
    samples = pd.read_csv(project / "results/samples.csv")
    assert len(table) == 4 and table.arch.is_unique and not set(table.arch) & set(samples.arch)
    assert table.standalone_acc.between(0, 1).all() and table.supernet_acc.between(0, 1).all()
    assert table.standalone_acc.tolist() == pytest.approx(((table.standalone_acc_seed0 + table.standalone_acc_seed1) / 2).tolist())
    truth = pd.read_csv(project / "results/truth.csv")
    anchors = pd.read_csv(project / "results/anchors.csv")
    assert not set(table.arch) & set(anchors.arch)  # never checked on a network it was given the answer for
    checked = truth[truth.arch.isin(table.arch)]
    assert len(checked) == 8 and set(checked.arch) == set(table.arch) and sorted(set(checked.seed)) == [0, 1]
    report = json.loads((project / "metrics/rankcheck.json").read_text())
    assert report["networks"] == 4 and -1.0 <= report["truth.self_kendall_tau"] <= 1.0
    # The end result: at a quarter, half and three quarters of the FLOPs range, the choice against the largest network.
    lookup = pd.read_csv(project / "results/lookup.csv").set_index("arch")
    low, high = lookup.flops_M.min(), lookup.flops_M.max()
    assert report["end.budgets"] == 3 and 0 <= report["end.choice_at_least_as_good"] <= 3
    for q, fraction in (("q25", 0.25), ("q50", 0.5), ("q75", 0.75)):
        budget = report[f"end.{q}.flops_budget"]
        assert budget == pytest.approx(low + fraction * (high - low))
        feasible = lookup[lookup.flops_M <= budget]
        assert report[f"end.{q}.largest_flops_M"] == pytest.approx(feasible.flops_M.max())
        assert report[f"end.{q}.choice_arch"] == feasible.predicted_acc.idxmax()
        for who in ("choice", "largest"):
            trained = truth[truth.arch == report[f"end.{q}.{who}_arch"]]
            assert sorted(trained.seed) == [0, 1]
            assert report[f"end.{q}.{who}_acc"] == pytest.approx(trained.standalone_acc.mean())
    assert "rankcheck end result:" in result.stdout and "at least as accurate as the largest network at" in result.stdout
    for column in RANKERS:
        low, tau, high = (report[f"{column}.kendall_tau{end}"] for end in ("_low", "", "_high"))
        assert -1.0 <= low <= tau <= high <= 1.0
        assert 0.0 <= report[f"{column}.precision_top10"] <= 1.0 and report[f"{column}.regret_top1"] >= 0.0
    assert (project / "plots/rankcheck.png").is_file()
    assert "up to date" in run([sys.executable, "-m", "dvc", "status", "rankcheck/dvc.yaml"], project).stdout
    shown = json.loads(run([sys.executable, "-m", "dvc", "plots", "show", "--json", "results/rankcheck.csv", "--template",
                            "scatter_zoomed", "-x", "standalone_acc", "-y", "supernet_acc"], project).stdout)  # as README says
    assert not shown.get("errors"), shown["errors"]
    assert len(shown["data"]["results/rankcheck.csv"][0]["content"]["data"]["values"]) == len(table)

    # Networks already trained come from the truth table: a forced re-run trains none.
    again = run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "rankcheck/dvc.yaml:rankcheck"], project)
    assert "rankcheck: 0 of 8 trainings to do (4 networks x 2 seeds; 8 in results/truth.csv)" in again.stdout
    assert "rankcheck end result: 0 of" in again.stdout
    assert pd.read_csv(project / "results/rankcheck.csv").standalone_acc.tolist() == table.standalone_acc.tolist()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fitnas")
    runs = client.search_runs([experiment.experiment_id], "tags.`fitnas.stage` = 'rankcheck'")
    assert runs and "predicted_acc.kendall_tau" in runs[0].data.metrics


def test_a_supernet_param_change_reruns_everything_downstream(reproduced):
    # Last: it moves the workspace to a new experiment.
    project, _ = reproduced
    # Back to the baseline: git holds params, dvc.lock and the metrics (cache: false), DVC the rest.
    run(["git", "checkout", "--", "."], project)
    run([sys.executable, "-m", "dvc", "checkout", "dvc.yaml"], project)
    assert "up to date" in run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], project).stdout
    result = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "supernet.lr=0.05"], project)
    assert ran_stages(result.stdout) == STAGES - {"prepare", "latency"}  # the latency table times blocks, not the supernet
    assert "up to date" in run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], project).stdout
