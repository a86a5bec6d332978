"""Translate new text with a trained translation run (``encouraging translate RUN --input FILE``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from ..data.text import read_lines
from ..engine.batches import TokenBatches
from ..engine.checkpoint import load_checkpoint
from .loading import load_run

WEIGHTS = ("last", "averaged")


def translate(run_dir: str | os.PathLike[str], sentences: Iterable[str], *, beam: int | None = None,
              weights: str = "last", device: str = "auto", max_tokens: int = 8192) -> list[str]:
    """The run's translations of ``sentences`` (one each, in order), decoded with ``beam`` (default: the run's
    ``data.beam``) and its length rules; ``weights="averaged"`` uses the mean weights of its last epochs
    (``train.average_last``)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    loaded = load_run(run_dir, device=device)
    if loaded.cfg.task != "translation":
        raise ValueError(f"translate: {loaded.run_dir} is a {loaded.cfg.task!r} run, not a translation run")
    if weights == "averaged":
        path = loaded.run_dir / "weights-averaged.pt"
        if not path.is_file():
            raise FileNotFoundError(f"translate: {path} does not exist (train with train.average_last > 0)")
        loaded.model.load_state_dict(load_checkpoint(path, map_location=loaded.device)["model"])
    d, vocab = loaded.cfg.data, loaded.task.vocab
    sources = [vocab.encode(s) for s in sentences]
    if not sources:
        return []
    batches = TokenBatches(sources, [[] for _ in sources], max_tokens, train=False, device=loaded.device)
    out: dict[int, str] = {}
    with torch.no_grad():
        for inputs, _ in batches.epoch(0):
            hypotheses = loaded.model.generate(inputs, beam=beam or d.beam, length_penalty=d.length_penalty,
                                               max_len_a=d.max_len_a, max_len_b=d.max_len_b)
            out.update((int(i), vocab.decode(h)) for i, h in zip(inputs.index, hypotheses, strict=True))
    return [out[i] for i in range(len(sources))]


def translate_file(run_dir: str | os.PathLike[str], source: str | os.PathLike[str], output: str | None = None,
                   **kwargs) -> int:
    """Translate each line of ``source`` (plain or gzip text) into ``output`` (default: standard output)."""
    lines = translate(run_dir, read_lines(source), **kwargs)
    text = "".join(line + "\n" for line in lines)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return len(lines)
