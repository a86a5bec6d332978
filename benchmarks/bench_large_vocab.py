"""Large-vocabulary benchmark: a linear head plus loss, forward+backward, materialized logits vs chunked paths.

What is measured, per shape (N tokens, V classes, H features) and op: one forward plus backward of
``op(hidden (N, H), weight (V, H), target (N,))`` with ``reduction='mean'``, both ``hidden`` and ``weight``
requiring grad (float32 on CPU; bf16 on CUDA by default, ``--dtype``).

* ``median_ms`` (``p20_ms``, ``p80_ms``): wall time over the timed calls. On the CPU every (shape, op) runs in a
  fresh process (on CUDA every shape): a warm-up call on a small shape (lazy initialization, kernel
  compilation), then one call that measures the peak memory and is timed too (on the CPU each large buffer is a
  fresh mmap, so later calls pay the same page faults), then ``reps - 1`` more timed calls.
  The ops take turns, ``--rounds`` times, so that a change in the machine's load hits all of them alike.
* ``peak_MB``: memory the call holds at its peak beyond its inputs, the gradients of hidden and weight included.
  CPU: the rise of ``ru_maxrss`` (glibc serves large tensors with mmap and unmaps them on free, so RSS follows
  the allocations). CUDA: ``max_memory_allocated`` minus the memory allocated before the call.
* ``vs_CE`` / ``mem_vs_CE``: against ``ce`` (``F.cross_entropy`` of the materialized ``F.linear`` logits) of the
  same shape in the same run.

Ops: ``ce``; ``paper_el`` (the paper's formula on materialized logits); ``el`` (our ``encouraging_loss`` on
materialized logits); ``linear_el`` (our chunked path, PyTorch), ``linear_el_ls0.1`` (with label smoothing 0.1);
``linear_el_cpp``, ``linear_el_ls0.1_cpp`` (the same with ``impl='auto'``: the compiled CPU kernel per chunk, CPU);
``linear_el_triton`` (chunked with the Triton kernel, CUDA), ``linear_el_triton_lc`` (the same at Liger's chunk
size); and where installed ``torch_linear_ce``
(``F.linear_cross_entropy``), ``liger_flce`` (Liger-Kernel's fused linear cross entropy), ``cce``
(cut-cross-entropy). Unavailable ones are left out of the table.

Run from the repository root: ``python benchmarks/bench_large_vocab.py [--shapes 4096x32000x1024,...]
[--device cuda] [--threads 1] [--rounds 2] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import loss as loss_bench  # benchmarks/loss.py: machine line, address-space cap, OOM detection

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

DEFAULT_SHAPES = "4096x32000x1024,8192x32000x1024,4096x128256x1024,8192x128256x1024"
MIB = 2**20


# ------------------------------------------------------------------------------------------------ providers
# Each maps (hidden, weight, target) to a scalar loss; imports stay inside, so the parent never loads torch.


def _logits(h, w):
    import torch.nn.functional as F

    return F.linear(h, w)


def ce(h, w, t):
    import torch.nn.functional as F

    return F.cross_entropy(_logits(h, w).float(), t)


def paper_el(h, w, t):
    from tests.losses.reference import paper_encouraging_loss

    return paper_encouraging_loss(_logits(h, w).float(), t, log_end=0.75)


def el(h, w, t):
    from encouraging import encouraging_loss

    return encouraging_loss(_logits(h, w), t, log_end=0.75)


def linear_el(h, w, t):
    from encouraging import linear_encouraging_loss

    return linear_encouraging_loss(h, w, t, log_end=0.75, impl="torch")


def linear_el_ls(h, w, t):
    from encouraging import linear_encouraging_loss

    return linear_encouraging_loss(h, w, t, label_smoothing=0.1, log_end=0.75, impl="torch")


def linear_el_cpp(h, w, t):
    from encouraging import linear_encouraging_loss

    return linear_encouraging_loss(h, w, t, log_end=0.75, impl="auto")  # on the CPU: the compiled kernel


def linear_el_ls_cpp(h, w, t):
    from encouraging import linear_encouraging_loss

    return linear_encouraging_loss(h, w, t, label_smoothing=0.1, log_end=0.75, impl="auto")


def linear_el_triton(h, w, t):
    from encouraging import linear_encouraging_loss

    return linear_encouraging_loss(h, w, t, log_end=0.75, impl="triton")


def linear_el_triton_liger_chunk(h, w, t):
    # Liger's fused linear cross entropy picks next_pow2(ceil(N / ceil(V / H))) tokens per chunk; the same chunk
    # here compares the two at equal memory (our default chunk is up to twice that).
    from encouraging import linear_encouraging_loss

    n, (v, d) = h.shape[0], w.shape
    chunk = 1 << (-(-n // -(-v // d)) - 1).bit_length()
    return linear_encouraging_loss(h, w, t, log_end=0.75, impl="triton", chunk_size=chunk)


def torch_linear_ce(h, w, t):
    import torch.nn.functional as F

    return F.linear_cross_entropy(h, w, t)


def liger_flce(h, w, t):
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    return liger_fused_linear_cross_entropy(h, w, t)


def cce(h, w, t):
    from cut_cross_entropy import linear_cross_entropy

    return linear_cross_entropy(h, w, t)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _has_torch_linear_ce() -> bool:
    import torch.nn.functional as F

    return hasattr(F, "linear_cross_entropy")


# name -> (function, devices, availability check)
PROVIDERS = {
    "ce": (ce, ("cpu", "cuda"), lambda: True),
    "paper_el": (paper_el, ("cpu", "cuda"), lambda: True),
    "el": (el, ("cpu", "cuda"), lambda: True),
    "linear_el": (linear_el, ("cpu", "cuda"), lambda: True),
    "linear_el_ls0.1": (linear_el_ls, ("cpu", "cuda"), lambda: True),
    "linear_el_cpp": (linear_el_cpp, ("cpu",), lambda: True),
    "linear_el_ls0.1_cpp": (linear_el_ls_cpp, ("cpu",), lambda: True),
    "linear_el_triton": (linear_el_triton, ("cuda",), lambda: _has("triton")),
    "linear_el_triton_lc": (linear_el_triton_liger_chunk, ("cuda",), lambda: _has("triton")),
    "torch_linear_ce": (torch_linear_ce, ("cpu", "cuda"), _has_torch_linear_ce),
    "liger_flce": (liger_flce, ("cuda",), lambda: _has("liger_kernel")),
    "cce": (cce, ("cuda",), lambda: _has("cut_cross_entropy")),
}


def get_provider(name: str):
    try:
        return PROVIDERS[name][0]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; valid providers: {', '.join(PROVIDERS)}") from None


# ------------------------------------------------------------------------------------------------- child


def make_inputs(rows: int, v: int, h: int, device: str, dtype, gen):
    """``(hidden (rows, H), weight (V, H), target (rows,))``, both leaves requiring grad, drawn from ``gen``."""
    import torch

    hidden = torch.randn(rows, h, device=device, dtype=dtype, generator=gen).requires_grad_()
    # in place: a temporary (V, H) copy would raise ru_maxrss's high-water mark before the measured call
    weight = torch.randn(v, h, device=device, dtype=dtype, generator=gen).div_(h**0.5).requires_grad_()
    return hidden, weight, torch.randint(v, (rows,), device=device, generator=gen)



def measure(ops: list[str], n: int, v: int, h: int, device: str, dtype: str, threads: int | None,
            reps: int) -> dict:
    """Per op: peak memory of one forward+backward beyond the inputs, and the wall times of ``reps`` calls."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    dt = getattr(torch, dtype)
    gen = torch.Generator(device).manual_seed(0)

    def inputs(rows, v, h):
        return make_inputs(rows, v, h, device, dt, gen)

    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    out = {}
    for op in ops:
        fn = get_provider(op)
        try:
            # Warm up on small shapes: ru_maxrss is a high-water mark, so the warm-up must stay far below the call.
            fn(*inputs(64, 512, 64)).backward()
            if device == "cpu":
                loss_bench._limit_address_space()
            hidden, weight, target = inputs(n, v, h)
            gc.collect()
            times = []
            for i in range(reps):
                hidden.grad = weight.grad = None
                sync()
                if i == 0:
                    if device == "cpu":
                        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
                    else:
                        base = torch.cuda.memory_allocated()
                        torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                fn(hidden, weight, target).backward()
                sync()
                times.append((time.perf_counter() - start) * 1e3)
                if i == 0:
                    if device == "cpu":
                        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
                    else:
                        peak = torch.cuda.max_memory_allocated() - base
            out[op] = {"status": "ok", "peak_MB": peak / MIB, "times": times}
        except Exception as err:
            if not loss_bench._is_oom(err):
                raise
            out[op] = {"status": "OOM/skipped"}
        hidden = weight = target = None
        gc.collect()
        if device != "cpu":
            torch.cuda.empty_cache()
    return out


def _child(task: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(task)], stdout=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        if proc.returncode == -9:  # the OOM killer, despite the address-space cap
            return {op: {"status": "OOM/skipped"} for op in task["ops"]}
        raise RuntimeError(f"benchmark child {task} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------------- parent

COLUMNS = ("op", "N", "V", "H", "dtype", "median_ms", "p20_ms", "p80_ms", "peak_MB", "vs_CE", "mem_vs_CE")
WIDTHS = (16, 5, 6, 4, 8, 10, 9, 9, 9, 6, 9)


def _line(cells) -> str:
    padded = [str(c).rjust(w) for c, w in zip(cells, WIDTHS, strict=True)]
    padded[0] = str(cells[0]).ljust(WIDTHS[0])
    return "  ".join(padded)


def _format(row: dict) -> str:
    cells = [row["op"], row["N"], row["V"], row["H"], row["dtype"]]
    if row["status"] != "ok":
        return _line(cells + [row["status"]] + ["-"] * 5)
    cells += [f"{row[k]:.1f}" for k in ("median_ms", "p20_ms", "p80_ms")] + [f"{row['peak_MB']:.0f}"]
    return _line(cells + [loss_bench._ratio(row["vs_CE"]), loss_bench._ratio(row["mem_vs_CE"])])


def _shapes(text: str) -> list[tuple[int, int, int]]:
    try:
        return [tuple(int(x) for x in item.lower().split("x")) for item in text.split(",") if item]
    except ValueError:
        raise argparse.ArgumentTypeError(f"shapes must look like 4096x32000x1024, got {text!r}") from None


def reps_for(n: int, v: int, h: int, device: str) -> int:
    """CPU: about 1.2e12 multiply-adds per op and shape (3 calls at 4096x32000x1024, 1 at 128256); CUDA: 10."""
    return 10 if device != "cpu" else max(1, min(5, round(1.2e12 / (3 * n * v * h))))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=_shapes, default=_shapes(DEFAULT_SHAPES), help=f"NxVxH,... ({DEFAULT_SHAPES})")
    parser.add_argument("--ops", default=",".join(PROVIDERS), help="comma-separated; ce is always added")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per process (default: from the shape)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per (shape, op), the ops taking turns")
    parser.add_argument("--json", type=Path, help="also write the machine line and rows as JSON")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child:
        task = json.loads(args._child)
        result = loss_bench.environment(**task["env"]) if "env" in task else measure(**task)
        print(json.dumps(result))
        return []

    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    dtype = args.dtype or ("bfloat16" if kind == "cuda" else "float32")
    wanted = ["ce"] + [name for name in args.ops.split(",") if name and name != "ce"]
    for name in wanted:
        get_provider(name)
    ops = [name for name in wanted if kind in PROVIDERS[name][1] and PROVIDERS[name][2]()]
    env = _child({"env": {"device": args.device, "threads": args.threads}})
    machine = (f"machine: {env['machine']} | threads {env['threads']} | torch {env['torch']} | "
               f"encouraging {env['encouraging']} ({env['commit']}) | load {os.getloadavg()[0]:.2f} at start")
    print(machine)
    print(f"linear head + loss, forward+backward, reduction='mean', {dtype}, device {args.device}; "
          f"time in ms, peak extra memory in MiB; left out (not installed / not on this device): "
          f"{', '.join(sorted(set(wanted) - set(ops))) or 'none'}")
    print(_line(COLUMNS))
    rows, started = [], time.perf_counter()
    for n, v, h in args.shapes:
        reps = args.reps or reps_for(n, v, h, kind)
        results: dict[str, list[dict]] = {op: [] for op in ops}
        # CPU: a process per op (a clean ru_maxrss); CUDA: one per round (the allocator's statistics are exact).
        groups = [[op] for op in ops] if kind == "cpu" else [ops]
        for _ in range(args.rounds):
            for group in groups:
                for op, result in _child(dict(ops=group, n=n, v=v, h=h, device=args.device, dtype=dtype,
                                              threads=args.threads, reps=reps)).items():
                    results[op].append(result)
        base = None
        for op in ops:
            ok = [r for r in results[op] if r["status"] == "ok"]
            row = {"op": op, "N": n, "V": v, "H": h, "dtype": dtype, "status": "ok" if ok else "OOM/skipped"}
            if ok:
                times = [t for r in ok for t in r["times"]]
                p20, _, _, p80 = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else [
                    times[0]] * 4
                row.update(median_ms=statistics.median(times), p20_ms=p20, p80_ms=p80, runs=len(times),
                           peak_MB=statistics.median(r["peak_MB"] for r in ok))
            base = row if op == "ce" else base
            both = ok and base["status"] == "ok"
            row["vs_CE"] = row["median_ms"] / base["median_ms"] if both else None
            row["mem_vs_CE"] = row["peak_MB"] / base["peak_MB"] if both else None
            rows.append(row)
            print(_format(row), flush=True)
    print(f"vs_CE, mem_vs_CE: against ce of the same shape. Load {os.getloadavg()[0]:.2f} at the end. "
          f"Wall time {time.perf_counter() - started:.0f} s.")
    if args.json:
        args.json.write_text(json.dumps({"header": machine, **env, "device": args.device, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
