"""Where one forward+backward of a loss op spends its time: torch.profiler's table, host (CPU) and device columns.

``benchmarks/loss.py`` says how long an op takes; this says why, op by op (kernel launches, Python-side checks,
synchronizations). The ops are the providers of ``loss.py``. Each op runs ``--warmup`` times unprofiled (lazy
initialization, Triton compilation), then ``--reps`` times under the profiler; the table is sorted by total host
time, and the last line gives the wall time per call.

Run from the repository root: ``python benchmarks/profile_loss.py [--device cuda] [--shape 512x10] [--ops ce,el]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import loss as loss_bench  # benchmarks/loss.py: the providers and the shape parser (puts src/ on the path)


def profile_op(op: str, n: int, c: int, device: str, reps: int, warmup: int, rows: int) -> None:
    _, fns, x, t = loss_bench._prepare([op], n, c, device, None)  # the inputs loss.py times, seeded alike
    fn = fns[op]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn(x, t).backward()
        x.grad = None
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(reps):
            fn(x, t).backward()
            x.grad = None
        sync()
        wall = (time.perf_counter() - start) / reps
    print(f"== {op} ({n}, {c}) on {device}: {reps} calls")
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=rows))
    print(f"{op}: {wall * 1e3:.3f} ms per call under the profiler (its own overhead included)\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=loss_bench._shapes, default=loss_bench._shapes("512x10"), help="NxC")
    parser.add_argument("--ops", default="ce,el", help="providers of benchmarks/loss.py, comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--reps", type=int, default=20, help="profiled calls per op")
    parser.add_argument("--warmup", type=int, default=5, help="unprofiled calls first")
    parser.add_argument("--rows", type=int, default=25, help="table rows per op")
    args = parser.parse_args(argv)
    (n, c), = args.shape
    for op in [name for name in args.ops.split(",") if name]:
        profile_op(op, n, c, args.device, args.reps, args.warmup, args.rows)


if __name__ == "__main__":
    main()
