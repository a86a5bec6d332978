"""Where one forward+backward of a loss op spends its time: torch.profiler's table, host (CPU) and device columns.

``benchmarks/loss.py`` says how long an op takes; this says why, op by op (kernel launches, Python-side checks,
synchronizations). With a shape ``NxC`` the ops are the providers of ``loss.py`` (logits ``(N, C)``); with
``NxVxH`` they are those of ``bench_large_vocab.py`` (hidden ``(N, H)``, weight ``(V, H)``; bf16 on CUDA). Each op
runs ``--warmup`` times unprofiled (lazy initialization, Triton compilation), then ``--reps`` times under the
profiler; the table is sorted by ``--sort`` (total host time by default; ``self_device_time_total`` ranks the
kernels), and the last lines give the wall time and the kernels' summed device time per call.

Run from the repository root: ``python benchmarks/profile_loss.py [--device cuda] [--shape 512x10] [--ops ce,el]``,
or ``--shape 8192x32000x1024 --ops linear_el_triton_lc,liger_flce``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import bench_large_vocab  # the linear-head providers
import loss as loss_bench  # benchmarks/loss.py: the providers and the shape parser (puts src/ on the path)


def _call(op: str, shape: tuple[int, ...], device: str):
    """A closure running one forward+backward of ``op`` on inputs made as its benchmark makes them."""
    if len(shape) == 2:
        n, c = shape
        _, fns, x, t = loss_bench._prepare([op], n, c, device, None)
        leaves, fn, args = (x,), fns[op], (x, t)
    else:
        n, v, h = shape
        fn = bench_large_vocab.get_provider(op)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        args = bench_large_vocab.make_inputs(n, v, h, device, dtype, torch.Generator(device).manual_seed(0))
        leaves = args[:2]

    def run():
        fn(*args).backward()
        for leaf in leaves:
            leaf.grad = None

    return run


def profile_op(op: str, shape: tuple[int, ...], device: str, reps: int, warmup: int, rows: int,
               sort: str = "cpu_time_total") -> None:
    run = _call(op, shape, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        run()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(reps):
            run()
        sync()
        wall = (time.perf_counter() - start) / reps
    events = prof.key_averages()
    print(f"== {op} {shape} on {device}: {reps} calls")
    print(events.table(sort_by=sort, row_limit=rows))
    print(f"{op}: {wall * 1e3:.3f} ms per call under the profiler (its own overhead included)")
    if device.startswith("cuda"):
        # Kernels, copies and memsets only: an operator's row repeats the device time of the kernels it launched.
        device_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / reps
        print(f"{op}: {device_us / 1e3:.3f} ms of kernel time per call (the kernels' self device time, summed)")
    print()


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--shape must look like 512x10 or 8192x32000x1024, got {text!r}")
    return shape


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=_shape, default=(512, 10), help="NxC (logits) or NxVxH (linear head)")
    parser.add_argument("--ops", default="ce,el", help="providers of benchmarks/loss.py, comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--reps", type=int, default=20, help="profiled calls per op")
    parser.add_argument("--warmup", type=int, default=5, help="unprofiled calls first")
    parser.add_argument("--rows", type=int, default=25, help="table rows per op")
    parser.add_argument("--sort", default="cpu_time_total", help="the table's sort key (e.g. self_device_time_total)")
    args = parser.parse_args(argv)
    for op in [name for name in args.ops.split(",") if name]:
        profile_op(op, args.shape, args.device, args.reps, args.warmup, args.rows, args.sort)


if __name__ == "__main__":
    main()
