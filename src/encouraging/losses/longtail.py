r"""Losses for long-tailed data, each on top of the encouraging loss so that the bonus combines with any of them.

From the training set's class counts :math:`n_j` (prior :math:`\pi_j = n_j / \sum_k n_k`):

* class-balanced weights (Cui et al. 2019): :math:`w_j \propto (1 - \beta) / (1 - \beta^{n_j})`, normalised to
  sum to :math:`C` (:func:`class_balanced_weights`); pass them as ``weight`` (and ``bonus_weight="same"`` for the
  paper's class-weighted bonus);
* LDAM (Cao et al. 2019): margins :math:`m_j \propto n_j^{-1/4}` with :math:`\max_j m_j` = ``max_margin``
  (:func:`ldam_margins`), subtracted from the target logit before scaling by ``scale``;
* logit adjustment, loss form (Menon et al. 2021): offsets :math:`\tau \log \pi_j` added to every logit
  (:func:`logit_offsets`); :math:`\tau = 1` is the balanced softmax (Ren et al. 2020), since
  :math:`\log \pi_j = \log n_j - \log \sum_k n_k` and a constant shift leaves the softmax unchanged.

:class:`AdjustedEncouragingLoss` computes the encouraging loss of the adjusted logits
:math:`s\,(f + o - m_y e_y)`; with ``bonus_scale=0`` it is exactly the method's cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .modules import EncouragingLoss


def _counts(class_counts: Sequence[int] | Tensor) -> Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D sequence, got shape {tuple(counts.shape)}")
    if bool((counts <= 0).any()):
        empty = [i for i, c in enumerate(counts.tolist()) if c <= 0]
        raise ValueError(f"class_counts must be > 0 for every class; classes {empty[:10]} have none")
    return counts


def class_balanced_weights(class_counts: Sequence[int] | Tensor, beta: float = 0.9999) -> Tensor:
    """Effective-number weights ``(1 - beta) / (1 - beta ** n_j)``, normalised to sum to ``C``: ``(C,)`` float32."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = _counts(class_counts)
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (w / w.sum() * counts.numel()).float()


def ldam_margins(class_counts: Sequence[int] | Tensor, max_margin: float = 0.5) -> Tensor:
    """LDAM's per-class margins ``m_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4)``: ``(C,)`` float32."""
    if max_margin < 0:
        raise ValueError(f"max_margin must be >= 0, got {max_margin}")
    m = _counts(class_counts).pow(-0.25)
    return (m * (max_margin / m.max())).float()


def logit_offsets(class_counts: Sequence[int] | Tensor, tau: float = 1.0) -> Tensor:
    """Logit adjustment's offsets ``tau * log(pi_j)``: ``(C,)`` float32 (``tau=1``: the balanced softmax)."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    counts = _counts(class_counts)
    return (tau * (counts / counts.sum()).log()).float()


def adjusted_logits(input: Tensor, target: Tensor, *, offset: Tensor | None = None, margin: Tensor | None = None,
                    scale: float = 1.0, ignore_index: int = -100) -> Tensor:
    """``scale * (input + offset - margin[target] * onehot(target))`` for ``input`` ``(N, C)``; targets equal to
    ``ignore_index`` get no margin."""
    if input.dim() != 2:
        raise ValueError(f"input must have shape (N, C) for logit adjustments, got {tuple(input.shape)}")
    out = input
    if offset is not None:
        out = out + offset.to(input.dtype)
    if margin is not None:
        valid = target != ignore_index
        index = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
        m = margin.to(input.dtype)[index.squeeze(1)] * valid.to(input.dtype)
        out = out.scatter_add(1, index, -m.unsqueeze(1))
    return out * scale if scale != 1.0 else out


class AdjustedEncouragingLoss(EncouragingLoss):
    """The encouraging loss of logits adjusted for class imbalance: ``EL(scale * (f + offset - margin_y e_y), y)``.

    Args:
        offset: ``(C,)`` added to every logit (:func:`logit_offsets`), or None.
        margin: ``(C,)`` subtracted from the target logit (:func:`ldam_margins`), or None.
        scale: multiplies the adjusted logits (LDAM's ``s``; 1 otherwise).
        **kwargs: :class:`EncouragingLoss`'s arguments (``weight``, ``bonus_scale=0`` for the method alone, ...).

    Example:
        >>> loss = AdjustedEncouragingLoss(margin=ldam_margins([500, 50, 5]), scale=30.0, bonus_scale=0.0)
        >>> logits = torch.randn(4, 3, requires_grad=True)
        >>> loss(logits, torch.tensor([0, 1, 2, 2])).backward()
    """

    def __init__(self, offset: Tensor | None = None, margin: Tensor | None = None, scale: float = 1.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        for name, vector in (("offset", offset), ("margin", margin)):
            if vector is not None and vector.dim() != 1:
                raise ValueError(f"{name} must be a 1-D (C,) tensor, got shape {tuple(vector.shape)}")
        self.register_buffer("offset", offset)
        self.register_buffer("margin", margin)
        self.scale = scale

    def adjust(self, input: Tensor, target: Tensor) -> Tensor:
        """``scale * (input + offset - margin_y e_y)`` (forward and :meth:`parts` take the loss of these)."""
        for name, vector in (("offset", self.offset), ("margin", self.margin)):
            if vector is not None and input.dim() == 2 and vector.numel() != input.shape[1]:
                raise ValueError(f"{name} has {vector.numel()} classes but the input has {input.shape[1]}")
        return adjusted_logits(input, target, offset=self.offset, margin=self.margin, scale=self.scale,
                               ignore_index=self.ignore_index)
