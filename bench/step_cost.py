"""What weight sharing costs: one supernet training step against the same network built stand-alone.

For a few fixed architectures, the supernet with its path set to the architecture and the stand-alone
network of that architecture (`space.build`, as retraining trains it) each take training steps
through `fitnas.train.train_epoch`, the loop the stages use, on the same random batch. The two are
timed in alternation, many rounds, and compared by medians, so a neighbour's load on a shared
machine hits both alike. The supernet step includes what the stage does per step and a stand-alone
network does not: setting the path. Target: supernet step / stand-alone step <= 1.15.

    python bench/step_cost.py                 # CPU, and CUDA when a GPU is visible; ~1 min on CPU
    python bench/step_cost.py --rounds 40 --archs 8   # steadier, longer

Prints a table and writes bench/results/step_cost.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from fitnas.spaces import nb201
from fitnas.train import sgd_one_cycle, train_epoch

RESULTS = Path(__file__).resolve().parent / "results" / "step_cost.json"
TARGET = 1.15


def timed_steps(model, batches, optimizer, before_step, device: torch.device) -> float:
    """Seconds per step over the given batches, the way the stages train."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train_epoch(model, batches, optimizer, None, before_step, desc="bench")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / len(batches)


def measure(device: torch.device, archs, shape, batch: int, steps: int, rounds: int, warmup: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, shape.in_channels, 28, 28, generator=gen).to(device)
    y = torch.randint(0, shape.num_classes, (batch,), generator=gen).to(device)
    batches = [(x, y)] * steps
    torch.manual_seed(0)
    supernet = nb201.build_supernet(shape).to(device)
    super_opt, _ = sgd_one_cycle(supernet, 0.01, 0.9, 5e-4, 10)
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        alone = nb201.build(arch, shape).to(device)
        alone_opt, _ = sgd_one_cycle(alone, 0.01, 0.9, 5e-4, 10)

        def set_path(step: int, arch=arch) -> None:
            supernet.set_arch(arch)

        times = {"supernet": [], "standalone": []}
        for r in range(warmup + rounds):
            # Alternate which goes first, so neither always runs on a cache the other warmed.
            order = ("supernet", "standalone") if r % 2 == 0 else ("standalone", "supernet")
            for name in order:
                if name == "supernet":
                    t = timed_steps(supernet, batches, super_opt, set_path, device)
                else:
                    t = timed_steps(alone, batches, alone_opt, None, device)
                if r >= warmup:
                    times[name].append(t)
        s, a = statistics.median(times["supernet"]), statistics.median(times["standalone"])
        ratios = sorted(ts / ta for ts, ta in zip(times["supernet"], times["standalone"]))
        rows.append({
            "arch": nb201.to_str(arch),
            "supernet_ms": 1e3 * s,
            "standalone_ms": 1e3 * a,
            "ratio": s / a,
            "ratio_paired_q25": ratios[len(ratios) // 4],
            "ratio_paired_q75": ratios[(3 * len(ratios)) // 4],
        })
        print(f"  {device.type:4}  {1e3 * s:8.2f} ms  {1e3 * a:8.2f} ms  {s / a:6.3f}  {nb201.to_str(arch)}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=4, help="distinct architectures, drawn with seed 0")
    parser.add_argument("--channels", type=int, default=8, help="C of the network (params.yaml supernet.channels)")
    parser.add_argument("--cells", type=int, default=1, help="cells per stage (supernet.cells)")
    parser.add_argument("--batch", type=int, default=256, help="batch size (supernet.batch_size)")
    parser.add_argument("--steps", type=int, default=2, help="steps per timed call")
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per network, alternating")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    shape = nb201.NetworkShape(args.channels, args.cells, 1, 10)
    # Fixed architectures, without all-none cells (nothing to compare) and skip-only ones.
    archs = [a for a in nb201.sample(4 * args.archs, random.Random(0)) if any(op >= 2 for op in a)][: args.archs]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

    report = {
        "what": "median seconds per training step, supernet with its path fixed vs the same network stand-alone",
        "target_ratio": TARGET,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "devices": {},
    }
    print(f"one training step, batch {args.batch}, C={args.channels}, N={args.cells}; {args.rounds} alternating rounds of {args.steps} steps")
    print("  dev   supernet    stand-alone  ratio   arch")
    for device in devices:
        rows = measure(device, archs, shape, args.batch, args.steps, args.rounds, args.warmup)
        overall = statistics.median(r["ratio"] for r in rows)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
        report["devices"][device.type] = {"name": name, "archs": rows, "median_ratio": overall, "within_target": overall <= TARGET}
        print(f"  {device.type}: median ratio {overall:.3f} (target <= {TARGET}) on {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
