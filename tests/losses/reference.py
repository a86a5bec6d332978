"""Plain reference implementations the tests (and benchmarks) compare against.

``paper_encouraging_loss`` re-implements the formula of the paper's own ``EncouragingLoss.py`` (paper.md §2.3):
the bonus is built for every class with ``clamp(1 - p, min=1e-5)`` and the tangent past ``log_end``, then
``F.nll_loss(log_softmax - bonus, target)``. It is an oracle where its clamp is inactive, and the cost baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def paper_encouraging_loss(input: Tensor, target: Tensor, log_end: float = 0.75, reduction: str = "mean") -> Tensor:
    lprobs = F.log_softmax(input, dim=1)
    probs = torch.exp(lprobs)
    bonus = torch.log(torch.clamp(1.0 - probs, min=1e-5))
    if log_end != 1.0:
        bonus = torch.where(probs > log_end, 1.0 / (log_end - 1.0) * (probs - log_end) + math.log(1.0 - log_end), bonus)
    return F.nll_loss(lprobs - bonus, target, reduction=reduction)


# =============================================================================================================
# Plain float64 references written from the formulas (design.md §2). They work element by element with Python's
# ``math`` on lists, so they share no code path with the library: no log_softmax, no gather, no autograd. They
# are slow on purpose-sized inputs only (a few hundred elements); the tests keep shapes small.
#
# Precision: logits go up to ±1e4, where ``1 - p`` computed as ``1 - exp(log p)`` would lose every digit. Every
# ``log(1 - p_k)`` here is the exact ``logsumexp_{j != k} f_j - logsumexp(f)``, and ``1 - p_k`` is its exp.
# =============================================================================================================

#: The paper's clamp ``1 - p >= 1e-5``. The library applies it to the log bonus of the terms that label smoothing
#: and probability targets spread over all classes (never to the target term of class-index targets); pass
#: ``floor=True`` (the default) to the references to apply it at the same places.
P_CAP = 1.0 - 1e-5


def _lse(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def _log_softmax_row(row: list[float], log_probs: bool) -> tuple[list[float], list[float]]:
    """``log p_k`` and the exact ``log(1 - p_k) = logsumexp_{j != k} f_j - logsumexp(f)`` for one class vector.

    Both are taken relative to the largest logit first: ``f_y - logsumexp(f)`` directly would carry one ulp of
    ``|f_y|`` (3.6e-15 at 23) into ``log p_y``, which a tangent slope ``1 / (1 - LE)`` then multiplies.
    """
    top = 0.0 if log_probs else max(row)
    shifted = [f - top for f in row]
    norm = 0.0 if log_probs else _lse(shifted)
    log_p = [f - norm for f in shifted]
    log1m = [_lse([f for j, f in enumerate(shifted) if j != k] or [-math.inf]) - norm for k in range(len(row))]
    return log_p, log1m


def ref_bonus(name: str, log_p: float, log1m: float, *, log_end: float = 0.75, gamma: float = 2.0,
              start: float = 0.0, floor: bool = False) -> float:
    """``b(p)`` for one probability given ``log p`` and an exact ``log(1 - p)``.

    log: ``log(1 - p)`` for ``p <= LE``, ``log(1 - LE) + (p - LE) / (LE - 1)`` beyond; with ``floor`` the log is
    taken of ``1 - min(p, P_CAP)``. power: ``-p^gamma``. cosine: ``cos(pi p) - 1``. poly: ``1 - p``.
    ``start = s > 0``: ``b(p) - b(s)`` for ``p >= s``, else 0 (``b(s)`` never floored).
    """

    def raw(log_p: float, log1m: float, floor: bool) -> float:
        p = math.exp(log_p)
        if name == "log":
            le = log_end
            cap = min(le, P_CAP) if floor else le
            head = log1m if p <= cap else math.log1p(-cap)
            # (p - LE) / (LE - 1) written with the exact 1 - p, so no 1 - exp(log p) rounding is amplified
            tangent = -((1.0 - le) - math.exp(log1m)) / (1.0 - le) if p > le else 0.0
            return head + tangent
        if name == "power":
            return -(p**gamma)
        if name == "cosine":
            return math.cos(math.pi * p) - 1.0
        if name == "poly":
            return math.exp(log1m)
        raise ValueError(name)

    if start == 0.0:
        return raw(log_p, log1m, floor)
    if math.exp(log_p) < start:
        return 0.0
    return raw(log_p, log1m, floor) - raw(math.log(start), math.log1p(-start), False)


def _rows(input: Tensor) -> tuple[list[list[float]], tuple[int, ...], bool]:
    """Class vectors of ``input`` (class dim 1, or the only dim), the per-element shape, and 'unbatched'."""
    x = input.detach().to(torch.float64)
    unbatched = x.dim() == 1
    if unbatched:
        x = x.unsqueeze(0)
    shape = (x.shape[0],) + tuple(x.shape[2:])
    return x.movedim(1, -1).reshape(-1, x.shape[1]).tolist(), shape, unbatched


def _reduce(values: list[float], denom: float, reduction: str, shape: tuple[int, ...], unbatched: bool) -> Tensor:
    if reduction == "none":
        out = torch.tensor(values, dtype=torch.float64).reshape(shape)
        return out.squeeze(0) if unbatched else out
    total = math.fsum(values)
    if reduction == "mean":
        total = total / denom if denom != 0.0 else math.nan  # every element ignored: 0/0, as torch
    return torch.tensor(total, dtype=torch.float64)


def ref_class_loss(input: Tensor, target: Tensor, term, weight: Tensor | None = None, ignore_index: int = -100,
                   reduction: str = "mean", label_smoothing: float = 0.0, log_probs: bool = False) -> Tensor:
    """``sum_k q_k term(k, log p_k, log(1 - p_k), on_target)`` per element, with ``F.cross_entropy``'s targets.

    Class indices: ``q = (1 - eps) e_y + eps / C``, ``on_target = (k == y)``, ignored elements give 0, 'mean'
    divides by the summed ``weight[y]`` of the rest. Probabilities: ``q = t (1 - eps) + eps / C``,
    ``on_target = False`` for every class, 'mean' divides by the number of elements.
    """
    rows, shape, unbatched = _rows(input)
    num_classes = len(rows[0])
    w = [1.0] * num_classes if weight is None else weight.double().tolist()
    eps = label_smoothing
    values, denom = [], 0.0
    if target.is_floating_point():
        soft, _, _ = _rows(target)
        for row, t in zip(rows, soft, strict=True):
            log_p, log1m = _log_softmax_row(row, log_probs)
            q = [tk * (1.0 - eps) + eps / num_classes for tk in t]
            values.append(math.fsum(q[k] * term(k, log_p[k], log1m[k], False)
                                    for k in range(num_classes) if q[k] != 0.0))
            denom += 1.0
        return _reduce(values, denom, reduction, shape, unbatched)
    labels = target.reshape(-1).tolist()
    for row, y in zip(rows, labels, strict=True):
        if y == ignore_index:
            values.append(0.0)
            continue
        log_p, log1m = _log_softmax_row(row, log_probs)
        q = [(1.0 - eps) * (k == y) + eps / num_classes for k in range(num_classes)]
        values.append(math.fsum(q[k] * term(k, log_p[k], log1m[k], k == y)
                                for k in range(num_classes) if q[k] != 0.0))
        denom += w[y]
    return _reduce(values, denom, reduction, shape, unbatched)


def _class_weights(weight: Tensor | None, num_classes: int) -> list[float]:
    return [1.0] * num_classes if weight is None else weight.double().tolist()


def ref_encouraging_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,
                         reduction: str = "mean", label_smoothing: float = 0.0, *, log_end: float = 0.75,
                         bonus_scale: float = 1.0, bonus: str = "log", gamma: float = 2.0, bonus_start: float = 0.0,
                         bonus_weight: Tensor | str | None = None, log_probs: bool = False,
                         floor: bool = True) -> Tensor:
    """``L = sum_k q_k (-w_k log p_k + rho v_k b(p_k))`` (design.md §2, with ``v`` separate from ``w``).

    ``floor`` applies the paper's clamp where the library does: the log bonus of every class that is not the
    class-index target (smoothing and probability targets). ``floor=False`` gives the exact formula.
    """
    num_classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    w = _class_weights(weight, num_classes)
    if bonus_weight is None:
        v = [1.0] * num_classes
    elif isinstance(bonus_weight, str):
        v = w
    else:
        v = bonus_weight.double().tolist()

    def term(k: int, log_p: float, log1m: float, on_target: bool) -> float:
        ce = -w[k] * log_p
        if bonus_scale == 0.0:
            return ce
        b = ref_bonus(bonus, log_p, log1m, log_end=log_end, gamma=gamma, start=bonus_start,
                      floor=floor and not on_target)
        return ce + bonus_scale * v[k] * b

    return ref_class_loss(input, target, term, weight, ignore_index, reduction, label_smoothing, log_probs)


def ref_poly_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0, *, epsilon: float = 1.0) -> Tensor:
    """Poly-1: ``sum_k q_k w_k (-log p_k + epsilon (1 - p_k))``; without weights ``CE + epsilon (1 - p_t)``."""
    w = _class_weights(weight, input.shape[0] if input.dim() == 1 else input.shape[1])

    def term(k: int, log_p: float, log1m: float, on_target: bool) -> float:
        return w[k] * (-log_p + epsilon * math.exp(log1m))

    return ref_class_loss(input, target, term, weight, ignore_index, reduction, label_smoothing)


def ref_focal_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,
                   reduction: str = "mean", label_smoothing: float = 0.0, *, gamma: float = 2.0) -> Tensor:
    """Focal: ``sum_k q_k w_k (-(1 - p_k)^gamma log p_k)``."""
    w = _class_weights(weight, input.shape[0] if input.dim() == 1 else input.shape[1])

    def term(k: int, log_p: float, log1m: float, on_target: bool) -> float:
        return -w[k] * math.exp(log1m) ** gamma * log_p

    return ref_class_loss(input, target, term, weight, ignore_index, reduction, label_smoothing)


def ref_halted_focal_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100,
                          reduction: str = "mean", label_smoothing: float = 0.0, *, gamma: float = 2.0,
                          halt: float = 0.5) -> Tensor:
    """Halted focal: focal for ``p <= h``, ``-log p - beta`` above, ``beta = -log h + (1 - h)^gamma log h``."""
    w = _class_weights(weight, input.shape[0] if input.dim() == 1 else input.shape[1])
    beta = -math.log(halt) + (1.0 - halt) ** gamma * math.log(halt)

    def term(k: int, log_p: float, log1m: float, on_target: bool) -> float:
        if math.exp(log_p) <= halt:
            return -w[k] * math.exp(log1m) ** gamma * log_p
        return w[k] * (-log_p - beta)

    return ref_class_loss(input, target, term, weight, ignore_index, reduction, label_smoothing)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def ref_binary_encouraging_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean",
                                pos_weight: Tensor | None = None, *, log_end: float = 0.75, bonus_scale: float = 1.0,
                                bonus: str = "log", gamma: float = 2.0, bonus_start: float = 0.0) -> Tensor:
    """``w [pi y (-log s + rho b(s)) + (1 - y)(-log(1 - s) + rho b(1 - s))]``, ``s = sigmoid(x)``, elementwise."""
    shape = input.shape
    w = (torch.ones(()) if weight is None else weight).double().expand(shape).reshape(-1).tolist()
    pw = (torch.ones(()) if pos_weight is None else pos_weight).double().expand(shape).reshape(-1).tolist()
    values = []
    for x, y, wi, pi in zip(input.detach().double().reshape(-1).tolist(), target.double().reshape(-1).tolist(), w, pw,
                            strict=True):
        log_s, log1m_s = _log_sigmoid(x), _log_sigmoid(-x)
        kw = dict(log_end=log_end, gamma=gamma, start=bonus_start)
        pos = -log_s + (bonus_scale * ref_bonus(bonus, log_s, log1m_s, **kw) if bonus_scale else 0.0)
        neg = -log1m_s + (bonus_scale * ref_bonus(bonus, log1m_s, log_s, **kw) if bonus_scale else 0.0)
        values.append(wi * (pi * y * pos + (1.0 - y) * neg))
    if reduction == "none":
        return torch.tensor(values, dtype=torch.float64).reshape(shape)
    total = math.fsum(values)
    return torch.tensor(total / len(values) if reduction == "mean" else total, dtype=torch.float64)


def ref_el_grad_hard(logits: list[float], y: int, *, weight: float = 1.0, bonus_weight: float = 1.0,
                     bonus_scale: float = 1.0, log_end: float = 0.75) -> list[float]:
    """The gradient identity (design.md §2): ``dL/df = s (p - e_y)`` with
    ``s = w_y + rho v_y p_y / (1 - p_y)`` for ``p_y <= LE`` and ``w_y + rho v_y p_y / (1 - LE)`` above."""
    log_p, log1m = _log_softmax_row(logits, False)
    p = [math.exp(v) for v in log_p]
    one_minus = math.exp(log1m[y])  # 1 - p_y, exact
    rv = bonus_scale * bonus_weight
    if p[y] <= log_end:
        # Expanded so that no tiny 1 - p_y is divided by: s (p_y - 1) = -(w (1 - p_y) + rho v p_y) on the target,
        # s p_k = w p_k + rho v p_y (p_k / (1 - p_y)) off it, with p_k / (1 - p_y) = exp(log p_k - log(1 - p_y)).
        return [-(weight * one_minus + rv * p[y]) if k == y
                else weight * p[k] + rv * p[y] * math.exp(log_p[k] - log1m[y]) for k in range(len(logits))]
    s = weight + rv * p[y] / (1.0 - log_end)
    return [-s * one_minus if k == y else s * p[k] for k in range(len(logits))]
