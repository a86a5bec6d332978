r"""MSE and MAE on probabilities, with the paper's "mirror" bonus (paper.md §2.6, §5.9).

For logits :math:`f`, probabilities :math:`p = \mathrm{softmax}(f)` (``link="softmax"``) or
:math:`p = \mathrm{sigmoid}(f)` per class (``link="sigmoid"``), a per-class truth :math:`t_k \in [0, 1]`
(the one-hot :math:`e_y` of a class index, or a probability target), ``bonus_scale`` :math:`\rho` and ``gamma``
:math:`\gamma`, every class contributes

.. math::

    \ell_k = t_k \left[ a(1 - p_k) - \rho\, p_k^\gamma \right]
           + (1 - t_k) \left[ a(p_k) - \rho\, (1 - p_k)^\gamma \right],
    \qquad a(u) = u^2 \ (\texttt{base="mse"}), \quad a(u) = u \ (\texttt{base="mae"}),

and an example's loss is :math:`L_i = \omega_i \sum_k \ell_{ik}`, with :math:`\omega_i = w_{y_i}` (class weights,
as ``F.cross_entropy``; 1 without ``weight``). The :math:`\rho` term is the mirror bonus: the base loss's
penalty of the wrong side, turned into a reward for the right side. ``reduction='mean'`` averages over examples
**and** classes: :math:`\sum_i L_i / (C \sum_i \omega_i)` over the non-ignored examples, so without weights it is
:math:`\mathrm{mean}_{i,k}\, \ell_{ik}`, the paper's ``torch.mean``, and with ``bonus_scale=0`` it equals
``F.mse_loss(p, one_hot)`` (``F.l1_loss`` for ``mae``); ``'sum'`` is :math:`\sum_i L_i` (``F.mse_loss``'s
``'sum'``) and ``'none'`` gives :math:`L_i`, the class *sum* (without weights or ignored examples, ``'mean'``
is ``'none'``'s mean divided by C).

From the paper's code (``mnist&ood&additive_large-margin-softmax/el.py`` of
lancopku/well-classified-examples-are-underestimated): the four bases ``mse``, ``mse_sigmoid``, ``mae``,
``mae_sigmoid`` with the formulas above for one-hot targets, MAE written as :math:`t(1-p) + (1-t)p` (equal to
:math:`|t - p|` for one-hot :math:`t`), the same mirror bonus for all four with :math:`p` from the base's own link,
``torch.mean`` over examples and classes, :math:`\gamma` = its ``bonus_gamma`` (its MNIST script uses 2) and
:math:`\rho` = ``bonus_rho``. Our reading, beyond the paper: class weights, ``ignore_index`` and the ``'mean'``
denominator follow ``F.cross_entropy`` (times C); label smoothing smooths :math:`t`; for probability targets
:math:`t` is the target itself and :math:`\omega_i = \sum_k t_{ik} w_k` (the expected class weight). The formula
is linear in :math:`t`, so for soft :math:`t` the MSE differs from :math:`(t - p)^2` by the constant
:math:`t(1 - t)` (same gradient), and the MAE is not :math:`|t - p|`.

With :math:`\gamma = 2` and :math:`\rho = 1` the MSE's squares cancel: :math:`\ell_k = (1 - 2t_k)(2p_k - 1)`, linear
in :math:`p`; for softmax and a class index, :math:`L = 4 - C - 4p_y`, i.e. the loss maximizes :math:`p_y`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_nonnegative
from ._targets import Targets, mean_normalizer, prepare, reduce, smoothed
from .baselines import _WeightedLoss

BASES = ("mse", "mae")
LINKS = ("softmax", "sigmoid")


def _check_options(base: str, link: str, bonus_scale: float, gamma: float) -> None:
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    if link not in LINKS:
        raise ValueError(f"link must be one of {LINKS}, got {link!r}")
    check_nonnegative("bonus_scale", bonus_scale)
    if not gamma > 0.0:  # also rejects NaN
        raise ValueError(f"gamma must be > 0, got {gamma}")


def _power(u: Tensor, gamma: float) -> Tensor:
    if gamma < 1.0:
        # u^gamma has an infinite slope at u = 0 for gamma < 1 (a probability that rounds to 0 or 1), and
        # inf * 0 would give NaN gradients. Flooring at the smallest normal gives the true limit of the gradient
        # (d u^gamma / d f ~ gamma u^gamma -> 0, since du/df ~ u) and moves the value by < tiny^gamma.
        u = u.clamp(min=torch.finfo(u.dtype).tiny)
    return u.pow(gamma)


def _truth(t: Targets, label_smoothing: float) -> Tensor:
    """The per-class truth ``t_k`` as an (N, C, *) tensor: the (smoothed) one-hot, or the smoothed probabilities."""
    if not t.hard:
        return smoothed(t, label_smoothing)
    one_hot = torch.zeros_like(t.x).scatter_(1, t.index.unsqueeze(1), 1.0)
    if label_smoothing == 0.0:
        return one_hot
    return one_hot * (1.0 - label_smoothing) + label_smoothing / t.num_classes


def _example_weight(t: Targets, weight: Tensor | None) -> Tensor | None:
    """omega_i: ``w[y_i]`` for class indices, ``sum_k t_ik w_k`` for probability targets; None without weights."""
    if weight is None:
        return None
    w = weight.to(t.x.dtype)
    return w[t.index] if t.hard else (t.probs * t.class_view(w)).sum(1)


def mirror_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    base: str = "mse",
    link: str = "softmax",
    bonus_scale: float = 1.0,
    gamma: float = 2.0,
) -> Tensor:
    r"""MSE or MAE between probabilities and targets, plus the mirror bonus (math in the module docstring).

    Args:
        input: logits ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``. Half precision is computed in float32 and
            returned in the input dtype.
        target: class indices ``()``, ``(N)`` or ``(N, d1, ..., dK)`` in ``[0, C)`` or ``ignore_index``; or
            probabilities with the input's shape.
        weight: ``(C,)`` class weights; example ``i`` is weighted by ``weight[y_i]`` as in ``F.cross_entropy``.
        ignore_index: class index that contributes nothing (class-index targets only).
        reduction: ``'none'`` (per example: the sum over classes), ``'sum'``, or ``'mean'``: the sum divided by C
            times ``F.cross_entropy``'s denominator (the summed weights of the non-ignored examples; the number
            of examples for probability targets), i.e. the mean over examples and classes.
        label_smoothing: :math:`\varepsilon \in [0, 1]`: the truth is :math:`(1 - \varepsilon) t + \varepsilon / C`.
        base: ``'mse'`` (squared error) or ``'mae'`` (absolute error).
        link: ``'softmax'`` over the classes or ``'sigmoid'`` per class.
        bonus_scale: :math:`\rho \ge 0`; 0 gives the plain MSE / MAE.
        gamma: exponent :math:`\gamma > 0` of the mirror bonus (the paper's MNIST runs use 2).

    Returns:
        A scalar, or a tensor of the target's shape (class indices) for ``reduction='none'``.

    Example:
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> target = torch.randint(10, (8,))
        >>> loss = mirror_loss(logits, target, base="mse", link="sigmoid", gamma=2.0)
        >>> loss.backward()
    """
    _check_options(base, link, bonus_scale, gamma)
    t = prepare(input, target, weight, ignore_index, reduction, label_smoothing)
    if link == "softmax":
        p = F.softmax(t.x, dim=1)
        q = 1.0 - p
    else:
        p, q = torch.sigmoid(t.x), torch.sigmoid(-t.x)  # 1 - sigmoid(f) exactly, also where p rounds to 1
    # on: the class's loss when it is the target (t_k = 1); off: when it is not (t_k = 0)
    on, off = (q * q, p * p) if base == "mse" else (q, p)
    rho = float(bonus_scale)
    if rho != 0.0:
        on = on - rho * _power(p, gamma)
        off = off - rho * _power(q, gamma)
    truth = _truth(t, float(label_smoothing))
    elementwise = (off + truth * (on - off)).sum(1)
    omega = _example_weight(t, weight)
    if omega is not None:
        elementwise = elementwise * omega
    if t.hard:
        elementwise = t.masked(elementwise)
    return reduce(elementwise, mean_normalizer(t, weight) * t.num_classes, reduction, t)


class MirrorLoss(_WeightedLoss):
    """Module form of :func:`mirror_loss` (math and shapes there; arguments as there).

    ``bonus_scale`` is a plain attribute, so a :class:`~encouraging.losses.BonusSchedule` can ramp the mirror bonus
    (``target='bonus_scale'``; there is no ``log_end``).

    Example:
        >>> criterion = MirrorLoss(base="mse", link="softmax", bonus_scale=1.0, gamma=2.0)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(10, (8,))).backward()
    """

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, base: str = "mse", link: str = "softmax",
                 bonus_scale: float = 1.0, gamma: float = 2.0) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing)
        _check_options(base, link, bonus_scale, gamma)
        self.base = base
        self.link = link
        self.bonus_scale = bonus_scale
        self.gamma = gamma

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mirror_loss(input, target, *self._common(), base=self.base, link=self.link,
                           bonus_scale=self.bonus_scale, gamma=self.gamma)

    def extra_repr(self) -> str:
        return (f"base={self.base!r}, link={self.link!r}, bonus_scale={self.bonus_scale}, gamma={self.gamma}, "
                f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}")
