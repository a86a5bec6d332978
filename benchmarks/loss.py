"""Loss benchmark: forward+backward time and peak memory of the encouraging loss and its baselines.

What is measured, per shape (N, C) and op: one forward plus backward of ``op(logits, target)``
(``reduction='mean'``) on float32 logits of shape (N, C) that require grad, with class-index targets. A shape
``NxCxD1x...`` gives K-dimensional logits ``(N, C, D1, ...)`` and targets ``(N, D1, ...)`` (the table's N column
then reads ``NxD1x...``); Liger-Kernel's ops take 2-D logits only and are left out there. The ``el``
rows run ``impl='auto'`` (on the CPU the compiled kernel where it applies, else the eager fused path; Triton on
CUDA); the ``_torch`` rows the eager fused path, the ``_autograd`` rows the op-by-op path.

* ``median_ms``, ``p20_ms``, ``p80_ms``: wall time of that call over ``reps`` repetitions (``reps_for``: more for
  small shapes) after a discarded warm-up round. One process per shape times every op, taking the ops in turn
  within each repetition, so a change in the machine's load hits all of them alike; on CUDA each call is
  bracketed by ``torch.cuda.synchronize``.
* ``peak_MB``: extra memory (MiB) the call holds at its peak beyond its inputs (logits and targets), the logits'
  gradient included. On CPU torch keeps no allocator statistics, so every (shape, op) gets a fresh process that
  runs the op on 8 rows (lazy initialization), creates the inputs, reads ``ru_maxrss``, runs one forward+backward
  and reads it again: glibc serves large tensors with mmap and unmaps them on free, so RSS follows the
  allocations. On CUDA it is ``max_memory_allocated`` minus the memory allocated before the call, read in the
  timing process before the timed rounds.
* ``vs_CE`` / ``mem_vs_CE``: median time and peak memory relative to the op's baseline measured in the same run:
  ``F.cross_entropy``, or ``F.cross_entropy(label_smoothing=0.1)`` for the label-smoothed EL row.

A CPU child caps its address space at the memory available when it starts, so an op that does not fit is
reported as ``OOM/skipped`` (and left out of the timing) instead of waking the kernel's OOM killer.

Run from the repository root: ``python benchmarks/loss.py [--shapes 512x10,256x1000] [--large] [--csv PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # the working tree's package, and tests/ for the references

DEFAULT_SHAPES = "512x10,256x1000,4096x32000"
LARGE_SHAPE = (8192, 128256)  # 4.2 GB per float32 (N, C) tensor: --large adds it (slow on CPU)
SMOOTHING = 0.1
MIB = 2**20


# ------------------------------------------------------------------------------------------------ providers
# Each provider maps (logits, target) to a scalar loss. Imports stay inside them so the parent never loads torch.


def ce(x, t):
    import torch.nn.functional as F

    return F.cross_entropy(x, t)


def ce_ls(x, t):
    import torch.nn.functional as F

    return F.cross_entropy(x, t, label_smoothing=SMOOTHING)


def el(x, t):
    from encouraging import encouraging_loss

    return encouraging_loss(x, t, log_end=0.75)


def el_le1(x, t):
    from encouraging import encouraging_loss

    return encouraging_loss(x, t, log_end=1.0)


def el_ls(x, t):
    from encouraging import encouraging_loss

    return encouraging_loss(x, t, label_smoothing=SMOOTHING, log_end=0.75)


def el_triton(x, t):
    from encouraging import encouraging_loss

    return encouraging_loss(x, t, log_end=0.75, impl="triton")


def el_torch(x, t):
    from encouraging import encouraging_loss

    return encouraging_loss(x, t, log_end=0.75, impl="torch")


def el_le1_torch(x, t):
    from encouraging import encouraging_loss

    return encouraging_loss(x, t, log_end=1.0, impl="torch")


def el_autograd(x, t):
    from encouraging import encouraging_loss

    return encouraging_loss(x, t, log_end=0.75, impl="autograd")


def el_ls_autograd(x, t):
    from encouraging import encouraging_loss

    return encouraging_loss(x, t, label_smoothing=SMOOTHING, log_end=0.75, impl="autograd")


def poly1(x, t):
    from encouraging import poly_loss

    return poly_loss(x, t, epsilon=1.0)


def focal(x, t):
    from encouraging import focal_loss

    return focal_loss(x, t, gamma=2.0)


def liger_ce(x, t):
    # Liger-Kernel's cross-entropy writes the gradient into the logits' storage during forward: later calls in the
    # run read those values as logits. Every kernel timed here costs the same whatever the values (no
    # data-dependent branch on CUDA), so the timings hold.
    from liger_kernel.transformers.functional import liger_cross_entropy

    return liger_cross_entropy(x, t)


def liger_ce_ls(x, t):
    from liger_kernel.transformers.functional import liger_cross_entropy

    return liger_cross_entropy(x, t, label_smoothing=SMOOTHING)


def paper_el(x, t):
    from tests.losses.reference import paper_encouraging_loss

    return paper_encouraging_loss(x, t, log_end=0.75)


# name -> (function, baseline name); baselines come before the rows that use them.
PROVIDERS = {
    "ce": (ce, "ce"),
    "ce_ls0.1": (ce_ls, "ce"),
    "el": (el, "ce"),
    "el_le1.0": (el_le1, "ce"),
    "el_ls0.1": (el_ls, "ce_ls0.1"),
    "el_triton": (el_triton, "ce"),
    "el_torch": (el_torch, "ce"),
    "el_le1.0_torch": (el_le1_torch, "ce"),
    "el_autograd": (el_autograd, "ce"),
    "el_ls0.1_autograd": (el_ls_autograd, "ce_ls0.1"),
    "poly1": (poly1, "ce"),
    "focal": (focal, "ce"),
    "paper_el": (paper_el, "ce"),
    "liger_ce": (liger_ce, "ce"),
    "liger_ce_ls0.1": (liger_ce_ls, "ce_ls0.1"),
}
LIGER = ("liger_ce", "liger_ce_ls0.1")  # default ops on CUDA when liger-kernel is installed (Triton: CUDA only)
CUDA_ONLY = ("el_triton", *LIGER)


def get_provider(name: str):
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; valid providers: {', '.join(PROVIDERS)}") from None


def reps_for(n: int, c: int) -> int:
    """About 6e8 logits per op and shape: 5 repetitions at (4096, 32000), 3 at least, 200 at most (``n``: the
    positions, N times the K dimensions)."""
    return max(3, min(200, round(6e8 / (n * c))))


# ----------------------------------------------------------------------------------------------- children


def _limit_address_space(margin: int = 2**30) -> None:
    """Cap this process's address space at what it maps now plus the memory free now, less a margin: an op that
    does not fit then fails one allocation (a Python exception) instead of waking the kernel's OOM killer."""
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    except OSError:
        return
    mapped = int(status["VmSize"].split()[0]) * 1024
    available = int(meminfo["MemAvailable"].split()[0]) * 1024
    limit = mapped + max(available - margin, 0)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _is_oom(err: Exception) -> bool:
    # CPU allocations refused under the address-space cap raise a plain RuntimeError ("can't allocate memory").
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "memory" in str(err).lower())


def _prepare(ops: list[str], n: int, c: int, device: str, threads: int | None, dims: tuple[int, ...] = ()):
    """Set threads, run each op once on 8 rows (lazy initialization, not measured), cap memory, make the inputs
    (``dims``: the K dimensions of K-dim logits)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    fns = {op: get_provider(op)[0] for op in ops}
    gen = torch.Generator(device).manual_seed(0)
    small = (min(n, 8),) + tuple(min(d, 2) for d in dims)
    for fn in fns.values():
        fn(torch.randn(small[0], c, *small[1:], device=device, requires_grad=True),
           torch.randint(c, small, device=device)).backward()
    if device == "cpu":
        _limit_address_space()
    x = torch.randn(n, c, *dims, device=device, generator=gen, requires_grad=True)
    return torch, fns, x, torch.randint(c, (n, *dims), device=device, generator=gen)


def _cuda_peak(torch, fn, x, t) -> float:
    """Extra CUDA memory (MiB) of one forward+backward: the allocator's peak minus what was allocated before."""
    x.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn(x, t).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    x.grad = None
    return peak / MIB


def peak_memory(op: str, n: int, c: int, device: str, threads: int | None, dims: tuple[int, ...] = ()) -> dict:
    """Extra CPU memory of one forward+backward beyond its inputs, in a fresh process per (shape, op): an RSS
    high-water mark only rises (on CUDA ``timings`` reads the allocator's peak, which resets)."""
    try:
        torch, fns, x, t = _prepare([op], n, c, device, threads, tuple(dims))
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        fns[op](x, t).backward()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    except Exception as err:
        if not _is_oom(err):
            raise
        return {"status": "OOM/skipped"}
    return {"status": "ok", "peak_MB": peak / MIB}


def timings(ops: list[str], n: int, c: int, device: str, threads: int | None, reps: int, warmup: int,
            dims: tuple[int, ...] = ()) -> dict:
    """Wall times of forward+backward, the ops taken in turn within each repetition (round robin), so that a
    change in the machine's load during the run hits every op alike; the first ``warmup`` rounds are dropped.
    On CUDA each op's peak memory is read first, in this process."""
    torch, fns, x, t = _prepare(ops, n, c, device, threads, tuple(dims))
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    times: dict[str, list[float]] = {op: [] for op in ops}
    failed, peaks = {}, {}
    for op in ops if device != "cpu" else []:
        try:
            peaks[op] = _cuda_peak(torch, fns[op], x, t)
        except Exception as err:
            if not _is_oom(err):
                raise
            failed[op] = {"status": "OOM/skipped"}
    for i in range(warmup + reps):
        for op in [op for op in ops if op not in failed]:
            x.grad = None
            sync()
            start = time.perf_counter()
            try:
                fns[op](x, t).backward()
            except Exception as err:
                if not _is_oom(err):
                    raise
                failed[op] = {"status": "OOM/skipped"}
                continue
            sync()
            if i >= warmup:
                times[op].append((time.perf_counter() - start) * 1e3)
    out = dict(failed)
    for op in ops:
        if op not in failed:
            p20, _, _, p80 = statistics.quantiles(times[op], n=5, method="inclusive")
            out[op] = {"status": "ok", "median_ms": statistics.median(times[op]), "p20_ms": p20, "p80_ms": p80}
            if op in peaks:
                out[op]["peak_MB"] = peaks[op]
    return out


def environment(device: str, threads: int | None) -> dict:
    import torch

    import encouraging

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists():
            models = [ln.split(":", 1)[1] for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
            name = models[0].strip() if models else name
        name = f"{name} ({os.cpu_count()} cpus)"
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "no git"
    return {"machine": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "encouraging": encouraging.__version__, "commit": commit}


# ------------------------------------------------------------------------------------------ parent: the table


def _child(kind: str, **kwargs) -> dict:
    """Run ``environment``, ``peak_memory`` or ``timings`` in a fresh interpreter: a clean RSS high-water mark,
    its own address-space cap, and nothing left over from the ops measured before."""
    task = json.dumps({"kind": kind, "kwargs": kwargs})
    proc = subprocess.run([sys.executable, __file__, "--_child", task], stdout=subprocess.PIPE, text=True)
    if proc.returncode == -signal.SIGKILL:  # the kernel's OOM killer, despite the address-space cap
        oom = {"status": "OOM/skipped"}
        return {op: oom for op in kwargs["ops"]} if kind == "timings" else oom
    if proc.returncode != 0:  # its traceback went to our stderr
        raise RuntimeError(f"benchmark child {kind} {kwargs} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


COLUMNS = ("op", "N", "C", "dtype", "median_ms", "p20_ms", "p80_ms", "peak_MB", "vs_CE", "mem_vs_CE")
WIDTHS = (17, 9, 7, 5, 10, 9, 9, 9, 7, 9)


def _format(row: dict) -> str:
    positions = "x".join(str(v) for v in (row["N"], *row.get("dims", ())))
    cells = [row["op"], positions, row["C"], row["dtype"]]
    if row["status"] != "ok":
        cells += [row["status"]] + ["-"] * 5
    else:
        cells += [f"{row[k]:.3f}" if row[k] < 10 else f"{row[k]:.1f}" for k in ("median_ms", "p20_ms", "p80_ms")]
        cells += [f"{row['peak_MB']:.1f}", _ratio(row["vs_CE"]), _ratio(row["mem_vs_CE"])]
    return _line(cells)


def _line(cells: list) -> str:
    padded = [str(v).rjust(w) for v, w in zip(cells, WIDTHS, strict=True)]
    padded[0] = str(cells[0]).ljust(WIDTHS[0])
    return "  ".join(padded)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _shapes(text: str) -> list[tuple[int, ...]]:
    try:
        shapes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) < 2 for shape in shapes):
        raise argparse.ArgumentTypeError(f"shapes must look like 512x10,256x1000 (or NxCxD1x... for K-dim logits), "
                                         f"got {text!r}")
    return shapes


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=_shapes, default=_shapes(DEFAULT_SHAPES), help=f"NxC,... ({DEFAULT_SHAPES})")
    parser.add_argument("--large", action="store_true", help="also run 8192x128256 (needs ~20 GB, slow on CPU)")
    parser.add_argument("--ops", default=None, help="comma-separated; ce and baselines added (default: every op; "
                        "the liger ones on CUDA where liger-kernel is installed)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default: from the shape)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds of repetitions")
    parser.add_argument("--csv", type=Path, help="also write the rows as CSV")
    parser.add_argument("--json", type=Path, help="also write the machine line and rows as JSON")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child:
        task = json.loads(args._child)
        children = {"environment": environment, "peak_memory": peak_memory, "timings": timings}
        print(json.dumps(children[task["kind"]](**task["kwargs"])))
        return []

    if args.ops is None:
        liger = args.device != "cpu" and importlib.util.find_spec("liger_kernel") is not None
        args.ops = ",".join(name for name in PROVIDERS
                            if name not in CUDA_ONLY or (args.device != "cpu" and (liger or name not in LIGER)))
    wanted = [name for name in args.ops.split(",") if name]
    for name in wanted:
        get_provider(name)
    needed = {"ce", *wanted, *(PROVIDERS[name][1] for name in wanted)}
    ops = [name for name in PROVIDERS if name in needed]
    shapes = args.shapes + ([LARGE_SHAPE] if args.large and LARGE_SHAPE not in args.shapes else [])

    env = _child("environment", device=args.device, threads=args.threads)
    machine = (f"machine: {env['machine']} | threads {env['threads']} | torch {env['torch']} | "
               f"encouraging {env['encouraging']} ({env['commit']}) | load {os.getloadavg()[0]:.2f} at start")
    print(machine)
    print(f"forward+backward, reduction='mean', device {args.device}; time in ms, peak extra memory in MiB")
    print(_line(COLUMNS))
    rows, started = [], time.perf_counter()
    common = {"device": args.device, "threads": args.threads}
    cpu = args.device == "cpu"  # CUDA peaks are read in the timing process
    for n, c, *dims in shapes:
        shape = {"n": n, "c": c, "dims": dims, **common}
        memory = {op: (_child("peak_memory", op=op, **shape) if cpu else {"status": "ok"})
                  if not (dims and op in LIGER) else {"status": "2-D only"} for op in ops}
        fits = [op for op in ops if memory[op]["status"] == "ok"]
        positions = n * math.prod(dims)
        timed = _child("timings", ops=fits, reps=args.reps or reps_for(positions, c), warmup=args.warmup,
                       **shape) if fits else {}
        shape_rows = {}
        for op in ops:
            result = timed.get(op, memory[op])
            row = shape_rows[op] = {"op": op, "N": n, "C": c, **({"dims": dims} if dims else {}), "dtype": "fp32",
                                    **result,
                                    "peak_MB": result.get("peak_MB", memory[op].get("peak_MB"))}
            base = shape_rows.get(PROVIDERS[op][1], {})
            ok = row["status"] == "ok" and base.get("status") == "ok"
            row["vs_CE"] = row["median_ms"] / base["median_ms"] if ok else None
            # Below ~1 MiB the RSS reading is glibc heap and page granularity, not the op: no ratio.
            row["mem_vs_CE"] = row["peak_MB"] / base["peak_MB"] if ok and base["peak_MB"] >= 1 else None
            rows.append(row)
            print(_format(row), flush=True)
    print(f"vs_CE, mem_vs_CE: against ce; el_ls0.1 against ce_ls0.1 (label_smoothing={SMOOTHING}). "
          f"Wall time {time.perf_counter() - started:.0f} s.")

    meta = {**env, "device": args.device, "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if args.csv:
        fields = list(COLUMNS) + ["status"] + list(meta)
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({**meta, **row} for row in rows)
    if args.json:
        args.json.write_text(json.dumps({"header": machine, **meta, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
