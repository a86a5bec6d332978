"""Machine translation: a Transformer encoder-decoder trained with (label-smoothed) CE or EL over target tokens,
decoded with greedy or beam search and scored with BLEU (paper.md §3 MT row, §5.1, §5.10).

The corpus comes from :mod:`encouraging.data.text` (Multi30k De-En, IWSLT'14 De-En in fairseq's layout); subwords
from :mod:`encouraging.data.subwords`: a joint sentencepiece BPE model trained on the training split for raw text,
or the corpus's own segmentation when it is already BPE'd (IWSLT'14 from ``prepare-iwslt14.sh``). Batches hold at
most ``data.max_tokens`` padded tokens (:class:`~encouraging.engine.batches.TokenBatches`); the loss is the
registry's loss over the target tokens, padding left out, and the step's diagnostics (mean ``p_y``, the share of
tokens past ``log_end``) are per target token.

Evaluation decodes the whole split (validation with ``data.val_beam``, greedy by default; test with ``data.beam``,
beam 5 with ``data.length_penalty``), puts the hypotheses back in corpus order, and scores them with sacreBLEU
(``bleu``: corpus BLEU; its signature is saved with the run); for a BPE'd, tokenised corpus ``bleu_tok`` is the
paper's tokenized BLEU (sacreBLEU with ``tokenize=none`` on the tokenised text, as ``fairseq-generate
--remove-bpe``). The primary metric is BLEU: the reported epoch is the best on validation BLEU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.batches import TokenBatches
from ..engine.checks import field_problems, missing_modules
from ..engine.classification import classification_step, linear_classification_step
from ..engine.config import ModelConfig
from ..engine.distributed import gather_objects, gather_rows
from ..engine.task import DataStats, MetricSpec, Prepared, Step, Task, register_task
from ..models import unwrap_model

_RUNTIME = {"hash": False}
VOCABS = ("auto", "sentencepiece", "pretokenized")
TOKEN_LOSSES = ("ce", "ce_ls", "el", "el_ls", "poly1", "focal", "hfl")  # per-token losses needing no class counts
FUSED_LOSSES = ("ce", "ce_ls", "el", "el_ls")  # the EncouragingLoss presets: linear_encouraging_loss computes them


def _langs(text: str) -> tuple[str, str] | None:
    """``'de-en'`` -> ``('de', 'en')``; None unless two different, non-empty languages."""
    parts = text.split("-")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) and parts[0] != parts[1] else None


@dataclass
class TranslationDataConfig:
    dataset: str = "multi30k_de_en"  # a corpus of encouraging.data.text.CORPORA, or a folder of files (data.langs)
    langs: str = ""  # a folder's languages, "<source>-<target>" (its files: train.<source>, train.<target>, ...)
    root: str | None = field(default=None, metadata=_RUNTIME)  # data root; default: $ENCOURAGING_DATA, the cache
    vocab: str = "auto"  # auto (the corpus's own BPE if any, else sentencepiece) | sentencepiece | pretokenized
    vocab_size: int = 8000  # sentencepiece: joint source + target vocabulary
    min_count: int = 1  # pretokenized: tokens seen fewer times in training become <unk>
    max_tokens: int = 4096  # padded tokens per training batch (fairseq's --max-tokens)
    eval_max_tokens: int = field(default=8192, metadata=_RUNTIME)
    max_len: int = 256  # training pairs with more subwords on either side are left out (and counted)
    train_subset: int = 0  # keep the first N training pairs (0 = all)
    eval_subset: int = 0  # keep the first N validation and test pairs (0 = all; quick checks)
    beam: int = 5  # test decoding
    val_beam: int = 1  # validation decoding (every epoch: greedy is cheaper)
    length_penalty: float = 1.0
    max_len_a: float = 1.2  # hypotheses are at most max_len_a * source length + max_len_b tokens
    max_len_b: int = 10


@dataclass
class TranslationModelConfig(ModelConfig):
    name: str = "transformer_small"  # transformer_small (CPU) | transformer_iwslt_de_en (the paper's)
    # the output layer and the loss in chunks of tokens (linear_encouraging_loss): no (tokens x vocabulary) logits
    fused_loss: bool = False


@dataclass
class _Split:
    """What evaluating one split needs beside its batches: the reference sentences and the beam."""

    references: list[str]
    beam: int


@register_task
class TranslationTask(Task):
    """Task ``translation``: a Transformer trained with the registry's per-token loss, decoded with greedy or beam
    search and scored with sacreBLEU."""

    name = "translation"
    description = "machine translation (Transformer, label-smoothed CE/EL over tokens, beam search, BLEU)"
    data_config = TranslationDataConfig
    model_config = TranslationModelConfig
    metrics = MetricSpec(primary="bleu", label="BLEU", scale=1.0, extra=("bleu_tok",), paper="bleu",
                         notes=("vocab", "bleu_signature"))
    vocab: Any = None  # set by setup()
    tokenized: bool = False  # whether the corpus text is tokenised (bleu_tok applies)

    def check(self) -> list[str]:
        from ..data.text import CORPORA

        d = self.cfg.data
        problems = field_problems("data", d, (
            ("dataset", d.dataset in CORPORA or Path(d.dataset).is_dir(),
             f"one of {sorted(CORPORA)} or a folder of aligned files"),
            ("langs", (d.dataset in CORPORA and not d.langs) or (d.dataset not in CORPORA and _langs(d.langs)),
             "'<source>-<target>' (e.g. 'de-en') for a folder of files, and empty for a named corpus"),
            ("vocab", d.vocab in VOCABS, f"one of {VOCABS}"),
            ("vocab_size", d.vocab_size > 4, "> 4"), ("min_count", d.min_count >= 1, ">= 1"),
            ("max_tokens", d.max_tokens >= 1, ">= 1"), ("eval_max_tokens", d.eval_max_tokens >= 1, ">= 1"),
            ("max_len", d.max_len >= 1, ">= 1"), ("train_subset", d.train_subset >= 0, ">= 0 (0 = all)"),
            ("eval_subset", d.eval_subset >= 0, ">= 0 (0 = all)"), ("beam", d.beam >= 1, ">= 1"),
            ("val_beam", d.val_beam >= 1, ">= 1"), ("max_len_a", d.max_len_a >= 0, ">= 0"),
            ("max_len_b", d.max_len_b >= 1, ">= 1"),
        ))
        if self.cfg.loss.name not in TOKEN_LOSSES:
            problems.append(f"loss.name must be one of {TOKEN_LOSSES} for task translation, got "
                            f"{self.cfg.loss.name!r}")
        elif self.cfg.model.fused_loss and self.cfg.loss.name not in FUSED_LOSSES:
            problems.append(f"model.fused_loss computes the encouraging loss (or CE) only: loss.name must be one of "
                            f"{FUSED_LOSSES}, got {self.cfg.loss.name!r}")
        return problems + missing_modules(self.name, ("sentencepiece", "sacrebleu", "transformers"), "translation")

    def setup(self) -> Prepared:
        from ..data.subwords import PretokenizedVocab, remove_bpe, sentencepiece_vocab
        from ..data.text import CORPORA, find_corpus, folder_corpus, read_parallel
        from ..models import create_model

        d = self.cfg.data
        if d.dataset in CORPORA:
            corpus, root = find_corpus(d.dataset, d.root)
        else:  # a folder of files: already-BPE'd text when the vocabulary is the corpus's own
            corpus, root = folder_corpus(d.dataset, *_langs(d.langs), bpe=d.vocab == "pretokenized"), Path(d.dataset)
        if "train" not in corpus.splits:
            raise ValueError(f"data.dataset: corpus {corpus.name} has no training split ({sorted(corpus.splits)})")
        pairs = {split: read_parallel(*corpus.files(split, root)) for split in ("train", "valid", "test")}
        if d.train_subset:
            pairs["train"] = tuple(side[:d.train_subset] for side in pairs["train"])
        if d.eval_subset:
            for split in ("valid", "test"):
                pairs[split] = tuple(side[:d.eval_subset] for side in pairs[split])
        pretokenized = d.vocab == "pretokenized" or (d.vocab == "auto" and corpus.bpe)
        train_src, train_tgt = pairs["train"]
        if pretokenized:
            self.vocab = PretokenizedVocab.build(train_src + train_tgt, d.min_count)
            vocab_note = f"the corpus's own subwords, {len(self.vocab)} tokens seen >= {d.min_count} times in training"
        else:
            self.vocab = sentencepiece_vocab(train_src + train_tgt, d.vocab_size)
            vocab_note = f"joint sentencepiece BPE, {len(self.vocab)} pieces, trained on the training split"
        self.tokenized = corpus.bpe
        encode = self.vocab.encode
        ids = {split: ([encode(s) for s in src], [encode(t) for t in tgt]) for split, (src, tgt) in pairs.items()}
        keep = [i for i, (s, t) in enumerate(zip(*ids["train"], strict=True))
                if 0 < len(s) <= d.max_len and 0 < len(t) <= d.max_len]
        dropped = len(ids["train"][0]) - len(keep)
        train = TokenBatches([ids["train"][0][i] for i in keep], [ids["train"][1][i] for i in keep], d.max_tokens,
                             train=True, seed=self.cfg.train.seed, world=self.world, device=self.device)
        splits = {}
        for split, beam in (("valid", d.val_beam), ("test", d.beam)):
            batches = TokenBatches(*ids[split], d.eval_max_tokens, train=False, world=self.world,
                                   device=self.device)
            # the references as written (de-BPE'd): words the vocabulary lacks stay words, not <unk>
            references = [remove_bpe(t) if corpus.bpe else t for t in pairs[split][1]]
            splits[split] = (batches, _Split(references, beam))
        self._splits = {id(batches): info for batches, info in splits.values()}
        model = create_model(self.cfg.model.name, num_classes=len(self.vocab), **self.cfg.model.kwargs)
        tokens = sum(len(t) + 1 for t in train.targets)
        notes = {"test_note": f"{corpus.name} test: {len(pairs['test'][0])} sentence pairs"
                              + (f" (the first {d.eval_subset})" if d.eval_subset else ""),
                 "vocab": vocab_note, "bleu_signature": self._signature(),
                 "train_pairs": len(keep), "train_left_out": dropped, "train_target_tokens": tokens,
                 "train_size": len(keep), "val_size": len(pairs["valid"][0]), "test_size": len(pairs["test"][0])}
        return Prepared(model, train, splits["test"][0], DataStats(len(self.vocab)), val=splits["valid"][0],
                        notes=notes)

    def _signature(self) -> str:
        from sacrebleu.metrics import BLEU

        bleu = BLEU()
        bleu.corpus_score(["x"], [["x"]])  # the signature names the reference count, known after one score
        return str(bleu.get_signature())

    def training_step(self, model: nn.Module, batch: tuple, criterion: nn.Module) -> Step:
        inputs, labels = batch
        target = labels.reshape(-1)
        keep = target != inputs.pad  # padding is no token: left out of the loss and of every diagnostic
        log_end = float(getattr(criterion, "log_end", self.cfg.loss.log_end))
        if self.cfg.model.fused_loss:
            with self.autocast():
                states = model(inputs, hidden=True)
            weight, bias = unwrap_model(model).output_layer()
            hidden = states.reshape(-1, states.shape[-1])[keep].to(weight.dtype)
            return linear_classification_step(hidden, weight, bias, target[keep], criterion, log_end=log_end)
        logits = self.logits(model, inputs)
        return classification_step(logits.reshape(-1, logits.shape[-1])[keep], target[keep], criterion,
                                   log_end=log_end)

    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        """Per-token cross-entropy and accuracy (teacher forcing), and BLEU of the decoded split."""
        info: _Split = self._splits[id(batches)]
        d = self.cfg.data
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, right, tokens
        decoded: list[tuple[int, str]] = []
        with torch.no_grad():
            for inputs, labels in batches.epoch(0):
                logits = self.logits(model, inputs)
                keep = labels != inputs.pad
                z, y = logits[keep], labels[keep]
                sums += torch.stack([F.cross_entropy(z, y, reduction="sum").double(),
                                     (z.argmax(-1) == y).sum().double(), y.new_tensor(len(y)).double()])
                with self.autocast():
                    hypotheses = unwrap_model(model).generate(  # DDP and torch.compile wrappers lack it
                        inputs, beam=info.beam, length_penalty=d.length_penalty, max_len_a=d.max_len_a,
                        max_len_b=d.max_len_b)
                decoded += [(int(i), self.vocab.decode(h)) for i, h in zip(inputs.index, hypotheses, strict=True)]
        sums = gather_rows(sums.cpu().unsqueeze(0), self.world).sum(0)
        order = sorted(gather_objects(decoded, self.world))
        hyps = [text for _, text in order]
        return {"loss": float(sums[0] / sums[2]), "acc": float(sums[1] / sums[2]),
                **corpus_bleu(hyps, info.references, tokenized=self.tokenized)}


def corpus_bleu(hypotheses: list[str], references: list[str], *, tokenized: bool) -> dict[str, float]:
    """sacreBLEU's corpus BLEU (its 13a tokenizer: comparable across papers) and, for text that is already
    tokenized, ``bleu_tok``: BLEU on the text's own tokens (``tokenize="none"``), the number fairseq papers report
    (the paper's ``--remove-bpe`` BLEU). Both are ``100 * BP * exp(mean log n-gram precision, n = 1..4)``."""
    import sacrebleu

    out = {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score)}
    if tokenized:
        out["bleu_tok"] = float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score)
    return out

