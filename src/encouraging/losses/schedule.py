r"""``BonusSchedule``: a stateless ramp of ``bonus_scale`` or ``log_end`` over epochs or steps.

The value at time :math:`t` is ``base * factor(t)`` with, for :math:`u = \mathrm{clip}((t - D) / T, 0, 1)`
(``defer`` :math:`D`, ``length`` :math:`T`; ``length=0`` jumps straight to 1):

* ``constant``: 1;
* ``linear``: :math:`u`;
* ``cosine``: :math:`(\cos(\pi (1 + u)) + 1) / 2`;
* ``exp``: :math:`\exp((u - 1) r)` for ``rate`` :math:`r > 0`, :math:`1 - \exp(u r)` for :math:`r < 0`
  (the paper's code, paper.md §2.4);

and 0 while :math:`t < D` (the paper's ``defer_start``: plain CE first). Apply it in any loop with one line::

    schedule = BonusSchedule("linear", length=10, defer=5)
    for epoch in range(epochs):
        schedule.apply(criterion, epoch)   # sets criterion.bonus_scale
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("constant", "linear", "cosine", "exp")
TARGETS = ("bonus_scale", "log_end")


@dataclass(frozen=True)
class BonusSchedule:
    """A ramp of one loss attribute (``bonus_scale`` or ``log_end``); see the module docstring for the math.

    Args:
        kind: ``'constant'``, ``'linear'``, ``'cosine'`` or ``'exp'``.
        length: ramp length :math:`T` in the caller's unit (epochs or steps), >= 0.
        defer: the factor is 0 while ``t < defer`` (for ``bonus_scale``: the bonus is off, plain CE; for
            ``log_end``: LE = 0, the linear bonus).
        rate: :math:`r` of the ``exp`` ramp (nonzero).
        target: the attribute :meth:`apply` sets, ``'bonus_scale'`` or ``'log_end'``.
        base: the value reached at the end of the ramp.
    """

    kind: str = "constant"
    length: float = 0.0
    defer: float = 0.0
    rate: float = 5.0
    target: str = "bonus_scale"
    base: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if not self.length >= 0:
            raise ValueError(f"length must be >= 0, got {self.length}")
        if not self.defer >= 0:
            raise ValueError(f"defer must be >= 0, got {self.defer}")
        if self.kind == "exp" and self.rate == 0:
            raise ValueError("rate must be nonzero for kind='exp', got 0")
        low, high = (0.0, 1.0) if self.target == "log_end" else (0.0, math.inf)
        if not low <= self.base <= high:
            raise ValueError(f"base must be in [{low}, {high}] for target={self.target!r}, got {self.base}")

    def factor(self, t: float) -> float:
        """The multiplier of ``base`` at time ``t``, in [0, 1]."""
        if t < self.defer:
            return 0.0
        u = 1.0 if self.length == 0 else min(max((t - self.defer) / self.length, 0.0), 1.0)
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            return u
        if self.kind == "cosine":
            return (math.cos(math.pi * (1.0 + u)) + 1.0) / 2.0
        return math.exp((u - 1.0) * self.rate) if self.rate > 0 else 1.0 - math.exp(u * self.rate)

    def value(self, t: float) -> float:
        """``base * factor(t)``: the attribute's value at time ``t``."""
        return self.base * self.factor(t)

    def apply(self, loss: object, t: float) -> float:
        """Set ``loss.<target>`` to its value at time ``t`` and return it."""
        if not hasattr(loss, self.target):
            raise TypeError(f"{type(loss).__name__} has no attribute {self.target!r} to schedule")
        value = self.value(t)
        setattr(loss, self.target, value)
        return value
