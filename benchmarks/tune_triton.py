"""Launch configurations of the Triton EL kernel: its time per (block size, warps), to choose the defaults on a GPU.

The row kernel of ``encouraging.losses.triton.el`` runs one program per row with a block of up to 8192 logits and
8 warps (4 below 4096); Liger-Kernel's cross-entropy uses blocks of up to 32768 and 32 warps on an H100, measured
by its authors as bandwidth-bound. Which suits EL (whose smoothed form does more arithmetic per logit) is a
measurement. For each shape and loss (``el``: the paper's default, ``el_le1.0``: the full bonus, ``el_ls0.1``:
label smoothing 0.1), this times one call of ``el_loss_and_grad`` (loss and gradient of every logit: the whole of
a forward+backward, backward only scales) for the default block size and every one from 1024 to 32768 up to the
row's next power of two, each with 4, 8, 16 and 32 warps (``--blocks`` and ``--warps`` narrow the sweep; the median
of ``--reps`` calls, each bracketed by ``torch.cuda.synchronize``), and prints each beside the current default
(``vs_default``; the default's own row is marked ``*``).

``--static`` needs no GPU: it compiles each configuration for an architecture (``--arch``, default 90: H100) with
Triton's own toolchain and reads the cubin's resource usage (``cuobjdump -res-usage``): registers per thread, stack
(spilled registers) and shared memory, and the warps per SM they leave room for (65536 registers, at most 64
warps: the occupancy that hides memory latency in a streaming kernel).

Run from the repository root: ``python benchmarks/tune_triton.py --device cuda [--shapes 4096x32000]
[--dtype bf16] [--json PATH]``, or ``python benchmarks/tune_triton.py --static``. ``--device cpu`` only runs under
Triton's interpreter (``TRITON_INTERPRET=1``), as a smoke test of the script; its times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import torch  # noqa: E402

from loss import _shapes, environment  # noqa: E402

VARIANTS = {"el": {}, "el_le1.0": {"log_end": 1.0}, "el_ls0.1": {"label_smoothing": 0.1}}
BLOCKS = (1024, 2048, 4096, 8192, 16384, 32768)
WARPS = (4, 8, 16, 32)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _median_ms(fn, reps: int, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()  # compiles this configuration
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def tune(n: int, c: int, dtype: torch.dtype, device: str, reps: int, blocks: tuple[int, ...] = BLOCKS,
         warps: tuple[int, ...] = WARPS) -> list[dict]:
    """One row per (variant, block, warps) at shape (n, c); the default configuration is always among them."""
    from encouraging.losses.triton import el

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(n, c, generator=g) * 3).to(device=device, dtype=dtype)
    target = torch.randint(c, (n,), generator=g).to(device)
    configs = {(b, w) for b in blocks if b <= el.triton.next_power_of_2(c) for w in warps}
    rows = []
    for variant, kwargs in VARIANTS.items():
        default = (el._block_size(c), el._num_warps(el._block_size(c), "label_smoothing" in kwargs))
        timed = {}
        for block, nw in sorted(configs | {default}):
            timed[block, nw] = _median_ms(
                lambda block=block, nw=nw, kwargs=kwargs: el.el_loss_and_grad(
                    logits, target, block_size=block, num_warps=nw, **kwargs),
                reps, device)
        for (block, warps), ms in sorted(timed.items(), key=lambda item: item[1]):
            rows.append({"variant": variant, "N": n, "C": c, "dtype": str(dtype).removeprefix("torch."),
                         "block": block, "num_warps": warps, "median_ms": ms, "vs_default": ms / timed[default],
                         "default": (block, warps) == default})
    return rows


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 8,16,32, got {text!r}") from None


def static_rows(dtype: str, arch: int) -> list[dict]:
    """Resource usage of every (variant, block, warps) configuration compiled for ``arch`` (no GPU needed)."""
    import re
    import subprocess
    import tempfile

    from triton import knobs

    from encouraging.losses.triton import el

    rows = []
    for variant, kwargs in VARIANTS.items():
        flags = dict(HAS_W=False, HAS_V=False, HAS_SCALE=True, SCALE_LOSS=True, SMOOTH="label_smoothing" in kwargs,
                     FULL=kwargs.get("log_end") == 1.0, HAS_FLOOR=False, COMPUTE_GRAD=True)
        for block in BLOCKS:
            for warps in WARPS:
                compiled = el.compile_for(arch, dtype=dtype, num_warps=warps, BLOCK=block, **flags)
                with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
                    cubin.write(compiled.asm["cubin"])
                    cubin.flush()
                    usage = subprocess.run([knobs.nvidia.cuobjdump.path, "-res-usage", cubin.name],
                                           capture_output=True, text=True, check=True).stdout
                found = dict(re.findall(r"(REG|STACK|SHARED):(\d+)", usage))
                regs = int(found["REG"])
                per_warp = -(-regs // 8) * 8 * 32  # registers are allocated per warp, 8 per thread at a time
                programs = min(65536 // (per_warp * warps), 64 // warps)
                rows.append({"variant": variant, "dtype": dtype, "block": block, "num_warps": warps,
                             "registers": regs, "stack_bytes": int(found["STACK"]),
                             "shared_bytes": int(found["SHARED"]), "warps_per_sm": programs * warps,
                             "default": block <= el._block_size(block)
                             and warps == el._num_warps(block, "label_smoothing" in kwargs)})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=_shapes, default=_shapes("512x10,256x1000,4096x32000,8192x128256"),
                        help="comma-separated NxC")
    parser.add_argument("--device", default="cuda", help="cuda[:i] (cpu: interpreter smoke test only)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per configuration")
    parser.add_argument("--blocks", type=_ints, default=BLOCKS, help="block sizes to time (default: 1024 to 32768)")
    parser.add_argument("--warps", type=_ints, default=WARPS, help="warps per program to time (default: 4,8,16,32)")
    parser.add_argument("--top", type=int, default=6, help="fastest rows printed per (shape, variant)")
    parser.add_argument("--json", type=Path, help="also write the machine line and every row as JSON")
    parser.add_argument("--static", action="store_true", help="resource usage per configuration, no GPU needed")
    parser.add_argument("--arch", type=int, default=90, help="with --static: the CUDA architecture (90: H100)")
    args = parser.parse_args(argv)
    if args.static:
        return _print_static(args)
    from encouraging.losses.triton import available

    if not available(args.device):
        parser.error(f"--device {args.device}: the Triton kernel needs CUDA and triton (or TRITON_INTERPRET=1)")
    env = environment(args.device, None)
    import triton

    machine = (f"machine: {env['machine']} | torch {env['torch']} | triton {triton.__version__} | "
               f"encouraging {env['encouraging']} ({env['commit']})")
    print(machine)
    print(f"{'variant':10} {'N':>6} {'C':>7} {'dtype':>8} {'block':>6} {'warps':>5} {'median_ms':>10} "
          f"{'vs_default':>10}")
    rows = []
    for n, c in args.shapes:
        shape_rows = tune(n, c, DTYPES[args.dtype], args.device, args.reps, args.blocks, args.warps)
        rows += shape_rows
        for variant in VARIANTS:
            mine = [r for r in shape_rows if r["variant"] == variant]
            shown = mine[: args.top] + [r for r in mine[args.top:] if r["default"]]
            for r in shown:
                mark = " *" if r["default"] else ""
                print(f"{variant:10} {n:>6} {c:>7} {r['dtype']:>8} {r['block']:>6} {r['num_warps']:>5} "
                      f"{r['median_ms']:>10.3f} {r['vs_default']:>9.2f}x{mark}")
    print("*: the current default (block, warps); vs_default: median time over the default's, same run.")
    if args.json:
        args.json.write_text(json.dumps({"header": machine, "rows": rows}, indent=1))
    return rows


def _print_static(args: argparse.Namespace) -> list[dict]:
    import triton

    dtype = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}[args.dtype]
    commit = environment("cpu", None)["commit"]
    machine = f"static: sm_{args.arch} | triton {triton.__version__} | {dtype} logits | encouraging ({commit})"
    print(machine)
    print(f"{'variant':10} {'block':>6} {'warps':>5} {'registers':>9} {'stack_B':>7} {'shared_B':>8} {'warps/SM':>8}")
    rows = static_rows(dtype, args.arch)
    for r in rows:
        mark = " *" if r["default"] else ""
        print(f"{r['variant']:10} {r['block']:>6} {r['num_warps']:>5} {r['registers']:>9} {r['stack_bytes']:>7} "
              f"{r['shared_bytes']:>8} {r['warps_per_sm']:>8}{mark}")
    print("*: a default (the block is the row's next power of two up to 8192); stack_B: spilled registers per "
          "thread; warps/SM: resident warps the registers allow (of 64)")
    if args.json:
        args.json.write_text(json.dumps({"header": machine, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
