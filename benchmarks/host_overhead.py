"""Host time of the Triton paths, without a GPU: what our own Python costs around the kernel launches.

At 10 to 1000 classes, and in the chunked linear loss at H=1024, a GPU finishes the kernels before the host has
queued the next ones (docs/benchmarks.md), so the host's work is the time. This measures that work on the CPU
under ``TRITON_INTERPRET=1`` with every Triton launch replaced by a no-op (the launches' own cost, Triton's
Python launcher, is not in it; the CUDA-only ``torch._assert_async`` is replaced by the CPU's range check):

* ``few-launch``: one forward+backward of ``encouraging_loss(x, t, impl='triton')`` at (512, 10), per call;
* ``linear per chunk``: ``linear_encouraging_loss(impl='triton')`` of 4096 tokens (H=16, V=100) in 256 chunks
  minus the same in one chunk, divided by 255: the host work the chunk loop adds per chunk (slicing, the
  per-chunk arguments, the CPU matrix products of a tiny head).

Each is the best of 7 rounds, one thread. Run from the repository root:
``TRITON_INTERPRET=1 python benchmarks/host_overhead.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402


def _best_us(fn, calls: int) -> float:
    fn()
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls)
    return min(rounds) * 1e6


def main() -> dict[str, float]:
    from encouraging import encouraging_loss, linear_encouraging_loss
    from encouraging.losses.triton import el
    from encouraging.losses.triton import loss as few_launch

    torch.set_num_threads(1)
    el.launch = few_launch.launch = lambda *args, **kwargs: None
    few_launch.target_stats = lambda target, weight, vocab, ignore_index: torch.ones(2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 10, generator=gen, requires_grad=True)
    t = torch.randint(10, (512,), generator=gen)
    out = {"few-launch": _best_us(lambda: encouraging_loss(x, t, impl="triton").backward(), 2000)}
    hidden = torch.randn(4096, 16, generator=gen, requires_grad=True)
    weight = torch.randn(100, 16, generator=gen, requires_grad=True)
    target = torch.randint(100, (4096,), generator=gen)
    calls = {chunk: _best_us(lambda chunk=chunk: linear_encouraging_loss(
        hidden, weight, target, impl="triton", chunk_size=chunk).backward(), 10) for chunk in (4096, 16)}
    out["linear per chunk"] = (calls[16] - calls[4096]) / 255
    for name, us in out.items():
        print(f"{name}: {us:.1f} us")
    return out


if __name__ == "__main__":
    main()
