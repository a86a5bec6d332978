"""The training step and evaluation of a task that predicts one class per example (image, long-tailed, graph).

Per epoch the step logs, averaged over the training examples: ``train_ce`` (plain cross-entropy of the same
logits, comparable across losses), ``train_bonus`` (loss minus the cross-entropy the loss is built on: plain CE, or
label-smoothed CE when the criterion smooths, so it is EL's bonus, the paper's logged "reward", and never the
smoothing term; 0 whenever the criterion's bonus is off, as for CE+LS or LDAM; for a long-tail method with the
bonus it also holds the method's logit adjustment), ``train_acc``,
``p_target`` (mean target probability) and ``frac_past_log_end`` (fraction of examples with ``p_target > log_end``,
where EL's bonus turns linear). The sums stay on the device: no host sync per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import EncouragingLoss, linear_encouraging_loss
from ..losses.linear import default_chunk_size
from .distributed import SINGLE, World, all_reduce_sum
from .task import Batches, Step, Task


def classification_step(logits: Tensor, target: Tensor, criterion: nn.Module, *, log_end: float = 0.75) -> Step:
    """``criterion(logits, target)`` with the diagnostics above; ``logits`` ``(N, C)`` float32, ``target`` ``(N,)``."""
    loss = criterion(logits, target)
    with torch.no_grad():
        sums = _diagnostic_sums(logits, target, log_end, float(getattr(criterion, "label_smoothing", 0.0)))
    return _step(loss, target.numel(), sums, criterion)


def linear_classification_step(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor,
                               criterion: EncouragingLoss, *, log_end: float = 0.75,
                               chunk_size: int | None = None) -> Step:
    """:func:`classification_step` of the logits ``hidden @ weight.T + bias`` without materializing them: the loss
    through :func:`~encouraging.losses.linear_encouraging_loss` with ``criterion``'s options, the diagnostics from
    a gradient-free pass over chunks of ``chunk_size`` rows (``hidden`` ``(N, H)``, ``weight`` ``(C, H)``)."""
    c = criterion
    loss = linear_encouraging_loss(
        hidden, weight, target, bias, c.weight, c.ignore_index, c.reduction, c.label_smoothing, log_end=c.log_end,
        bonus_scale=c.bonus_scale, bonus=c.bonus, gamma=c.gamma, bonus_start=c.bonus_start,
        bonus_weight=c.bonus_weight, bonus_floor=c.bonus_floor, chunk_size=chunk_size)
    rows = chunk_size or default_chunk_size(hidden.shape[0], weight.shape[0], weight.shape[1])
    with torch.no_grad():
        sums = sum(_diagnostic_sums(F.linear(h, weight, bias).float(), t, log_end, c.label_smoothing)
                   for h, t in zip(hidden.detach().split(rows), target.split(rows), strict=True))
    return _step(loss, target.numel(), sums, criterion)


def _diagnostic_sums(logits: Tensor, target: Tensor, log_end: float, smoothing: float) -> Tensor:
    """Summed over the rows: CE, right predictions, ``p_y``, ``p_y > log_end`` and the (smoothed) CE the loss is
    built on."""
    log_p_y = logits.log_softmax(1).gather(1, target.unsqueeze(1)).squeeze(1)
    p_y = log_p_y.exp()
    ce, correct, p_sum, past = torch.stack(
        [-log_p_y, (logits.argmax(1) == target).float(), p_y, (p_y > log_end).float()]).sum(1)
    base = F.cross_entropy(logits, target, label_smoothing=smoothing, reduction="sum") if smoothing else ce
    return torch.stack([ce, correct, p_sum, past, base])


def _step(loss: Tensor, n: int, sums: Tensor, criterion: nn.Module) -> Step:
    ce, correct, p_sum, past, base = sums
    bonus = loss.detach().double() * n - base.double()
    if getattr(criterion, "bonus_scale", None) == 0.0:  # the bonus is off (CE, LDAM, LA, ...): none to log
        bonus = torch.zeros_like(bonus)
    return Step(loss, n, {"train_ce": ce, "train_bonus": bonus, "train_acc": correct, "p_target": p_sum,
                          "frac_past_log_end": past})


@torch.no_grad()
def class_totals(logits: Callable[[object], Tensor], batches: Batches, num_classes: int, *, device: torch.device,
                 world: World = SINGLE) -> tuple[float, Tensor, Tensor]:
    """Over every ``(inputs, target)`` batch of ``batches`` (this rank's shard, summed over ``world``): the summed
    cross-entropy, and per class the correct predictions and the examples, ``(loss_sum, hits, counts)`` with
    ``hits``, ``counts`` float64 ``(C,)``; ``logits(inputs)`` is the model's forward."""
    k = num_classes
    sums = torch.zeros(2 * k + 1, dtype=torch.float64, device=device)  # loss, then misses (0..k-1), hits (k..2k-1)
    for x, y in batches.epoch(0):
        out = logits(x)
        sums[0] += F.cross_entropy(out, y, reduction="sum")
        sums[1:] += torch.bincount(y + k * (out.argmax(1) == y), minlength=2 * k)
    loss, misses, hits = all_reduce_sum(sums, world).split([1, k, k])
    return float(loss), hits, misses + hits


def classification_eval(logits: Callable[[object], Tensor], batches: Batches, num_classes: int, *,
                        device: torch.device, world: World = SINGLE) -> dict[str, float]:
    """Cross-entropy (``loss``) and top-1 accuracy (``acc``) over every example of ``batches``
    (:func:`class_totals`)."""
    loss, hits, counts = class_totals(logits, batches, num_classes, device=device, world=world)
    n = float(counts.sum())
    return {"loss": loss / n, "acc": float(hits.sum()) / n}


def binary_step(logits: Tensor, target: Tensor, criterion: nn.Module, *, log_end: float = 0.75) -> Step:
    """A multi-label / multi-task binary step (OGB molecules): ``criterion`` (mean over the labelled entries) on the
    entries of ``target`` that are not NaN, with the diagnostics of :func:`classification_step` per labelled entry:
    ``train_ce`` is the binary cross-entropy, ``p_target`` the probability of the true label, ``train_acc`` the
    share of entries right at threshold 0.5."""
    labelled = ~torch.isnan(target)
    z, y = logits[labelled], target[labelled]
    loss = criterion(z, y)
    with torch.no_grad():
        n = y.numel()
        p_y = torch.where(y > 0.5, torch.sigmoid(z), torch.sigmoid(-z))
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="sum")
        bonus = (loss.detach() * n).double() - bce.double()
        if getattr(criterion, "bonus_scale", None) == 0.0:
            bonus = torch.zeros_like(bonus)
        right, past = torch.stack([((z > 0) == (y > 0.5)).float(), (p_y > log_end).float()]).sum(1)
    return Step(loss, n, {"train_ce": bce, "train_bonus": bonus, "train_acc": right, "p_target": p_y.sum(),
                          "frac_past_log_end": past})


class ClassificationTask(Task):
    """A task whose batches are ``(inputs, target)`` pairs and whose model maps inputs to logits ``(N, C)``: the
    step is :func:`classification_step` under the criterion, the evaluation :func:`classification_eval` of
    :meth:`~Task.prediction_logits`. Subclasses implement :meth:`~Task.setup` and set :attr:`num_classes` there."""

    num_classes: int = 0

    def training_step(self, model: nn.Module, batch: tuple, criterion: nn.Module) -> Step:
        x, y = batch
        log_end = float(getattr(criterion, "log_end", self.cfg.loss.log_end))
        return classification_step(self.logits(model, x), y, criterion, log_end=log_end)

    def evaluate(self, model: nn.Module, batches: Batches) -> dict[str, float]:
        return classification_eval(lambda x: self.prediction_logits(model, x), batches, self.num_classes,
                                   device=self.device, world=self.world)
