"""bench/truth_recipe.py at tiny settings: it trains the rank check's draw into the truth table, and every option works."""

from __future__ import annotations

import importlib.util
import json
import random

import pandas as pd
import torch
import yaml

from conftest import ROOT, TINY, merged



def load_bench():
    spec = importlib.util.spec_from_file_location("bench_truth_recipe", ROOT / "bench" / "truth_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_truth_recipe_bench_every_option(tmp_path, monkeypatch):
    from fitnas import rankcheck
    from fitnas.data.splits import save_split
    from fitnas.spaces import nb201

    monkeypatch.chdir(tmp_path)
    gen = torch.Generator().manual_seed(0)
    for name, n in (("train", 200), ("val", 60)):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 255, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)
        save_split(f"data/prepared/{name}.pt", images, labels, [str(c) for c in range(10)])
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    sampled = {nb201.to_str(a) for a in nb201.sample(params["sample"]["n"], random.Random(params["seed"] + 2))}
    pool = pd.DataFrame({"arch": [nb201.to_str(a) for a in nb201.distinct()]})
    anchor = rankcheck.pick_archs(nb201.SPACE, pool, sampled, 1, params["seed"] + 4).arch[0]  # the draw's first, but an anchor
    (tmp_path / "results").mkdir()
    pd.DataFrame({"arch": [anchor], "accuracy": [0.9]}).to_csv("results/anchors.csv", index=False)

    bench = load_bench()
    journal = tmp_path / "journal.jsonl"
    row = bench.main(["--archs", "4", "--epochs", "1", "--train-limit", "100", "--batch-size", "50", "--lr", "0.05",
                      "--journal", str(journal)])
    assert row["networks"] == 4 and row["trained_now"] == 8 and -1 <= row["self_kendall_tau"] <= 1
    assert row["recipe"]["epochs"] == 1 and row["recipe"]["train_limit"] == 100 and row["recipe"]["lr"] == 0.05
    truth = pd.read_csv("results/truth.csv", dtype={"key": str})
    assert len(truth) == 8 and set(truth.key) == {row["key"]} and sorted(set(truth.seed)) == [0, 1]
    assert not set(truth.arch) & (sampled | {anchor})
    # The draw is the stage's: the same networks pick_archs gives from every distinct network.
    picked = rankcheck.pick_archs(nb201.SPACE, pool, [*sampled, anchor], 4, params["seed"] + 4)
    assert set(truth.arch) == set(picked.arch)

    again = bench.main(["--archs", "4", "--epochs", "1", "--train-limit", "100", "--batch-size", "50", "--lr", "0.05",
                        "--journal", str(journal), "--no-train"])
    assert again["trained_now"] == 0 and again["self_kendall_tau"] == row["self_kendall_tau"]
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["key"] == lines[1]["key"]

    # Common starts are another recipe: their own key, every network trained again beside the first.
    common = bench.main(["--archs", "4", "--epochs", "1", "--train-limit", "100", "--batch-size", "50", "--lr", "0.05",
                         "--journal", str(journal), "--common-init"])
    assert common["key"] != row["key"] and common["trained_now"] == 8 and common["common_init"]
    truth = pd.read_csv("results/truth.csv", dtype={"key": str})
    assert len(truth) == 16 and set(truth.key) == {row["key"], common["key"]}


def test_common_init_shares_weights_within_a_seed_only():
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from common_init import CommonInit

    from fitnas.spaces import nb201

    space = CommonInit(nb201.SPACE)
    shape = nb201.NetworkShape(channels=4, cells=1, in_channels=1, num_classes=10)
    first, second = nb201.sample(2, random.Random(3))
    assert first != second
    nets = {}
    for arch, seed in ((first, 0), (second, 0), (first, 1)):
        torch.manual_seed(seed)
        nets[arch, seed] = space.build(arch, shape)
    a, b, c = nets[first, 0], nets[second, 0], nets[first, 1]
    # Two networks of one seed: the same stem and classifier; another seed: other weights.
    assert torch.equal(a.classifier.weight, b.classifier.weight) and torch.equal(a.stem[0].weight, b.stem[0].weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    # Drawn as the layer's own initialisation draws (kaiming uniform): the same bound.
    bound = 1 / a.classifier.weight.shape[1] ** 0.5
    assert a.classifier.weight.abs().max() <= bound
    # Everything else is the space's.
    assert space.canonical(first) == nb201.SPACE.canonical(first)
