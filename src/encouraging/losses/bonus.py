r"""The bonus functions :math:`b(p)` added to cross-entropy, and their registry.

Every bonus is a non-positive "reward" for the probability :math:`p` of a class (design.md §2, paper.md §2.3-2.4):

* ``log`` (default): :math:`b(p) = \log(1 - p)` for :math:`p \le LE` and its tangent line
  :math:`\log(1 - LE) + (p - LE)/(LE - 1)` beyond (``log_end = LE``; 1 is the full bonus, 0 gives :math:`-p`);
* ``power``: :math:`b(p) = -p^\gamma`;
* ``cosine``: :math:`b(p) = \cos(\pi p) - 1`;
* ``poly``: :math:`1 - p`, Poly-1's term (Leng et al. 2022): a penalty rather than a reward, registered so that
  Poly-1 shares EL's implementation (``log_end = 0`` gives :math:`-p`, the same gradient);
* any bonus with ``start = s > 0`` (the paper's "aggressive" bonus): :math:`b_s(p) = b(p) - b(s)` for
  :math:`p \ge s`, 0 below.

Each entry gives three functions of :math:`\log p`:

* ``value(log_p, log1m_p, params)``: differentiable by autograd, finite everywhere (clamps, never ``where`` over
  an infinite branch). ``log1m_p`` is an exact :math:`\log(1 - p)` when the caller has one (the full log bonus
  needs it: :math:`\log(1-p)` from :math:`\log p` alone loses all precision as :math:`p \to 1`);
* ``dense_value`` / ``dense_grad``: the value and :math:`p\,b'(p) = \partial b / \partial \log p` for every class
  at once, in place, without autograd; used for the label-smoothing and soft-target terms. There the full log
  bonus is floored at :math:`1 - p \ge 10^{-5}` as in the paper's code (``P_CAP``), since no exact form exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .registry import Registry

#: The paper's clamp ``1 - p >= 1e-5``; applied only to the dense (non-target) terms of the log bonus.
P_CAP = 1.0 - 1e-5
_LOG_P_CAP = math.log(P_CAP)


@dataclass(frozen=True)
class BonusParams:
    """Shape parameters of a bonus. ``log_end`` and ``floor`` are read by ``log``, ``gamma`` by ``power``."""

    log_end: float = 0.75
    gamma: float = 2.0
    start: float = 0.0
    floor: float = 0.0  # log bonus only: log(max(1 - p, floor)), the paper's clamp when 1e-5


@dataclass(frozen=True)
class Bonus:
    """A registered bonus: its name, a one-line description and its three functions of ``log p``."""

    name: str
    description: str
    value: Callable[[Tensor, Tensor | None, BonusParams], Tensor]
    dense_value: Callable[[Tensor, BonusParams], Tensor]
    dense_grad: Callable[[Tensor, BonusParams], Tensor]
    uses: tuple[str, ...] = ()


_BONUSES: Registry[Bonus] = Registry("bonus")


def register_bonus(bonus: Bonus) -> Bonus:
    """Add a bonus to the registry; a name can be registered once."""
    return _BONUSES.register(bonus.name, bonus)


def list_bonuses(filter: str = "*") -> list[str]:
    """Names of the registered bonuses matching an fnmatch pattern, sorted."""
    return _BONUSES.names(filter)


def get_bonus(name: str) -> Bonus:
    """The registered bonus called ``name``; an unknown name lists the valid ones."""
    return _BONUSES.get(name)


# ----------------------------------------------------------------------------------------------------------- log


def _log_value(log_p: Tensor, log1m_p: Tensor | None, params: BonusParams) -> Tensor:
    le = params.log_end
    past = None
    if le == 1.0:
        head = log1m_p if log1m_p is not None else torch.log(-torch.expm1(log_p))
    else:
        p = log_p.exp()
        # One comparison picks the piece for every example, so exactly one piece carries the slope at p == LE
        # (clamps on log p and on p would each pass or block it there, and rounding can make them disagree).
        past = p > le
        if log1m_p is not None:
            head = torch.where(past, math.log1p(-le), log1m_p)
        elif le == 0.0:
            head = torch.zeros_like(log_p)
        else:  # log(1 - min(p, LE)); below LE, 1 - p >= 1 - LE keeps expm1 accurate and the log finite
            head = torch.log(-torch.expm1(torch.where(past, math.log(le), log_p)))
    if params.floor > 0.0:  # the paper's clamp: constant (zero gradient) once 1 - p < floor
        head = head.clamp(min=math.log(params.floor))
    if past is None:
        return head
    return head + torch.where(past, p - le, 0.0) / (le - 1.0)


# The dense functions run on (N, C) blocks: each fresh (N, C) buffer costs a first-touch page fault per page on
# the CPU, so they allocate two at most and work in place after that. p comes from exp(log p); for p <= LE < 1,
# 1 - p >= 1 - LE keeps log1p(-p) accurate, and at the full bonus p is capped at P_CAP (the paper's floor).


def _cap(params: BonusParams) -> float:
    """The largest p the dense terms evaluate log(1 - p) at: P_CAP, or 1 - floor when that is lower."""
    return min(P_CAP, 1.0 - params.floor)


def _log_dense_value(log_p: Tensor, params: BonusParams) -> Tensor:
    le = params.log_end
    p = log_p.exp()
    out = p.clamp(max=min(le, _cap(params))).neg_().log1p_()  # log(1 - min(p, LE, cap))
    if le < 1.0:  # + (max(p, LE) - LE) / (LE - 1)
        out.add_(p.clamp_(min=le), alpha=1.0 / (le - 1.0)).add_(-le / (le - 1.0))
    return out


def _log_dense_grad(log_p: Tensor, params: BonusParams) -> Tensor:
    # p b'(p) = -p / (1 - min(p, LE)), and 0 where the floor holds the value constant.
    le = params.log_end
    p = log_p.exp()
    if le == 0.0:
        return p.neg_()
    den = p.clamp(max=le).neg_().add_(1.0)
    grad = torch.div(p, den, out=den).neg_()
    cap = _cap(params)
    if le > cap:
        floor = p > cap
        if le < 1.0:
            floor &= p <= le
        grad.masked_fill_(floor, 0.0)
    return grad


register_bonus(
    Bonus(
        "log",
        "log(1 - p) up to p = log_end, then its tangent line (the paper's encouraging loss)",
        _log_value,
        _log_dense_value,
        _log_dense_grad,
        uses=("log_end",),
    )
)

# --------------------------------------------------------------------------------------------------------- power


def _power_value(log_p: Tensor, log1m_p: Tensor | None, params: BonusParams) -> Tensor:
    return -torch.exp(params.gamma * log_p)


def _power_dense_value(log_p: Tensor, params: BonusParams) -> Tensor:
    return log_p.mul(params.gamma).exp_().neg_()


def _power_dense_grad(log_p: Tensor, params: BonusParams) -> Tensor:
    return log_p.mul(params.gamma).exp_().mul_(-params.gamma)


register_bonus(
    Bonus("power", "-p^gamma (the paper's power bonus)", _power_value, _power_dense_value, _power_dense_grad,
          uses=("gamma",))
)

# -------------------------------------------------------------------------------------------------------- cosine


def _cosine_value(log_p: Tensor, log1m_p: Tensor | None, params: BonusParams) -> Tensor:
    return torch.cos(math.pi * log_p.exp()) - 1.0


def _cosine_dense_value(log_p: Tensor, params: BonusParams) -> Tensor:
    return log_p.exp().mul_(math.pi).cos_().sub_(1.0)


def _cosine_dense_grad(log_p: Tensor, params: BonusParams) -> Tensor:
    p = log_p.exp()
    return torch.sin(p * math.pi).mul_(p).mul_(-math.pi)


register_bonus(
    Bonus("cosine", "cos(pi p) - 1 (the paper's cosine bonus)", _cosine_value, _cosine_dense_value,
          _cosine_dense_grad)
)

# ---------------------------------------------------------------------------------------------------------- poly


def _poly_value(log_p: Tensor, log1m_p: Tensor | None, params: BonusParams) -> Tensor:
    return -torch.expm1(log_p)


def _poly_dense_value(log_p: Tensor, params: BonusParams) -> Tensor:
    return log_p.expm1().neg_()


def _poly_dense_grad(log_p: Tensor, params: BonusParams) -> Tensor:
    return log_p.exp().neg_()


register_bonus(
    Bonus("poly", "1 - p: a penalty, not a reward; with bonus_scale = epsilon the loss is Poly-1", _poly_value,
          _poly_dense_value, _poly_dense_grad)
)

# ------------------------------------------------------------------------------------- start shift (any bonus)


def _value_at(bonus: Bonus, p: float, params: BonusParams) -> float:
    log_p = torch.tensor(math.log(p), dtype=torch.float64)
    return float(bonus.value(log_p, None, params))


def bonus_value(bonus: Bonus, log_p: Tensor, log1m_p: Tensor | None, params: BonusParams) -> Tensor:
    """``b(p)`` with the ``start`` shift applied; differentiable by autograd."""
    value = bonus.value(log_p, log1m_p, params)
    if params.start == 0.0:
        return value
    shifted = value - _value_at(bonus, params.start, params)
    return torch.where(log_p >= math.log(params.start), shifted, torch.zeros_like(shifted))


def dense_bonus_value(bonus: Bonus, log_p: Tensor, params: BonusParams) -> Tensor:
    """``b(p)`` for every class (floored log bonus), no autograd."""
    value = bonus.dense_value(log_p, params)
    if params.start == 0.0:
        return value
    value.sub_(_value_at(bonus, params.start, params))
    return value.masked_fill_(log_p < math.log(params.start), 0.0)


def dense_bonus_grad(bonus: Bonus, log_p: Tensor, params: BonusParams) -> Tensor:
    """``p b'(p)`` for every class, matching :func:`dense_bonus_value`."""
    grad = bonus.dense_grad(log_p, params)
    if params.start == 0.0:
        return grad
    return grad.masked_fill_(log_p < math.log(params.start), 0.0)
