"""Host time per chunk of the chunked linear loss's Triton path, without a GPU.

On a GPU at H=1024 the chunked loss is bound by the host: Python queues each chunk's matrix products and kernel
launch no faster than the GPU runs them (docs/benchmarks.md). This measures the host work the chunk loop adds per
chunk (slicing, the per-chunk arguments, the CPU matrix products of a tiny head), with the Triton launch itself
replaced by a no-op so that it runs on the CPU under ``TRITON_INTERPRET=1``: the difference between 256 chunks and
one chunk of the same 4096 tokens, divided by 255 (best of 7 rounds of 10 calls, one thread). The launch's own
cost (Triton's Python launcher) is not in it.

Run from the repository root: ``TRITON_INTERPRET=1 python benchmarks/chunk_host_overhead.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402


def main() -> float:
    from encouraging import linear_encouraging_loss
    from encouraging.losses.triton import el

    torch.set_num_threads(1)
    el.launch = lambda *args, **kwargs: None  # host work only
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4096, 16, generator=gen, requires_grad=True)
    weight = torch.randn(100, 16, generator=gen, requires_grad=True)
    target = torch.randint(100, (4096,), generator=gen)
    best = {}
    for chunk in (4096, 16):
        def call(chunk=chunk):
            linear_encouraging_loss(hidden, weight, target, impl="triton", chunk_size=chunk).backward()

        call()
        rounds = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(10):
                call()
            rounds.append((time.perf_counter() - start) / 10)
        best[chunk] = min(rounds)
    per_chunk = (best[16] - best[4096]) / 255 * 1e6
    print(f"host time per chunk: {per_chunk:.1f} us (one call: {best[4096] * 1e3:.2f} ms in one chunk, "
          f"{best[16] * 1e3:.2f} ms in 256)")
    return per_chunk


if __name__ == "__main__":
    main()
