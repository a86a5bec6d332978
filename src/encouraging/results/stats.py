"""Statistics over seeds: mean ± sample std, a t-interval for the mean, and paired / Welch comparisons.

Every function returns a small frozen dataclass that carries its own caveat (``note``) when the numbers cannot be
computed honestly (fewer than two values or pairs, zero variance), instead of inventing a spread or a p-value.

.. math::

    \\bar x \\pm t_{0.975,\\,n-1} \\, s / \\sqrt n, \\qquad s^2 = \\tfrac{1}{n-1} \\sum_i (x_i - \\bar x)^2

Paired comparison of two losses over the seeds both ran: ``d_i = b_i - a_i`` (B − A), then the one-sample t-test of
``d`` against 0. Welch's unpaired test (unequal variances, Welch–Satterthwaite degrees of freedom) is the fallback
when the seeds do not match.

The Student-t distribution comes from ``scipy.stats`` (a dependency of the ``experiments`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Comparison",
    "Summary",
    "compare",
    "format_p",
    "format_signed",
    "mean_std_text",
    "paired",
    "summarize",
    "t_ppf",
    "t_sf",
    "welch",
]

MINUS = "\u2212"  # the typographic minus used in reports ("−0.05"), as in the paper's tables


# ---------------------------------------------------------------------------------------------------------------------
# Student t distribution
# ---------------------------------------------------------------------------------------------------------------------


def t_sf(t: float, df: float) -> float:
    """Upper tail ``P(T > t)`` of Student's t with ``df`` degrees of freedom (``scipy.stats.t.sf``)."""
    if df <= 0 or math.isnan(df):
        raise ValueError(f"df must be > 0, got {df}")
    # imported here, not at module top: scipy.stats takes ~1 s to import, which `import encouraging.results` (say,
    # only to open the store) should not pay; after the first call this is a sys.modules lookup
    from scipy import stats

    return float(stats.t.sf(t, df))


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t: the ``x`` with ``P(T <= x) = q`` (``scipy.stats.t.ppf``)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if df <= 0 or math.isnan(df):
        raise ValueError(f"df must be > 0, got {df}")
    from scipy import stats  # lazy: see t_sf

    return float(stats.t.ppf(q, df))


# ---------------------------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------------------------


LARGE = 1e6  # from here on numbers print as 1.94e+08: fixed notation's digits would carry no information


def format_number(x: float, digits: int = 2, sign: str = "") -> str:
    """``x`` with ``digits`` decimals, or in scientific notation from :data:`LARGE` on; ``sign="+"`` signs it."""
    return f"{x:{sign}.{digits}f}" if abs(x) < LARGE or not math.isfinite(x) else f"{x:{sign}.2e}"


def format_signed(x: float, digits: int = 2) -> str:
    """``+0.12`` / ``−0.05`` (typographic minus); zero prints as ``+0.00``."""
    s = format_number(x, digits, "+")
    if s.startswith("-"):
        # -0.00 is still zero: print it as +0.00
        return "+" + s[1:] if float(s) == 0.0 else MINUS + s[1:]
    return s


def format_p(p: float | None) -> str:
    """``p = 0.14``, ``p = 0.0031``, ``p < 0.0001``; ``p = n/a`` when no test was possible."""
    if p is None or math.isnan(p):
        return "p = n/a"
    if p < 1e-4:
        return "p < 0.0001"
    if p >= 0.01:
        return f"p = {p:.2f}"
    return f"p = {p:.2g}"


# ---------------------------------------------------------------------------------------------------------------------
# Summaries and comparisons
# ---------------------------------------------------------------------------------------------------------------------


def _clean(values: Iterable[float | None]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if math.isnan(v):
            continue
        out.append(v)
    return out


def _mean_std(xs: Sequence[float]) -> tuple[float, float | None]:
    n = len(xs)
    m = math.fsum(xs) / n
    if n < 2:
        return m, None
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof = 1) and a t-interval for the mean of ``n`` values.

    ``std`` and the interval are ``None`` when ``n < 2`` (``note`` says so); ``mean`` is ``None`` when ``n == 0``.
    NaN and ``None`` inputs are dropped before counting.
    """

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    min: float | None
    max: float | None
    confidence: float = 0.95
    note: str | None = None

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``99.42 ± 0.06`` (values times ``scale``, e.g. 100 for accuracies stored as fractions)."""
        if self.mean is None:
            return "n/a"
        if self.std is None:
            return f"{self.mean * scale:.{digits}f} (n = {self.n})"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


def mean_std_text(values: Iterable[float | None], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of ``values`` times ``scale`` for report tables; the mean alone for one value, ``–`` for none."""
    s = summarize(values)
    if s.mean is None:
        return "\u2013"
    if s.std is None:
        return format_number(s.mean * scale, digits)
    return f"{format_number(s.mean * scale, digits)} ± {format_number(s.std * scale, digits)}"


def summarize(values: Iterable[float | None], confidence: float = 0.95) -> Summary:
    """Mean ± sample std and the ``confidence`` t-interval of the mean; see :class:`Summary`."""
    xs = _clean(values)
    n = len(xs)
    if n == 0:
        return Summary(0, None, None, None, None, None, None, confidence, "no values")
    m, s = _mean_std(xs)
    if s is None:
        return Summary(1, m, None, None, None, xs[0], xs[0], confidence, "n = 1: no spread or interval")
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * s / math.sqrt(n)
    return Summary(n, m, s, m - half, m + half, min(xs), max(xs), confidence)


@dataclass(frozen=True)
class Comparison:
    """The difference B − A between two sets of per-seed values, with a t-interval and a two-sided test.

    ``method`` is ``"paired"`` (over the shared seeds, ``n`` pairs), ``"welch"`` (unpaired, ``n_a`` and ``n_b``
    values) or ``"none"`` (not enough data; ``note`` says why and every number but ``mean_diff`` is ``None``).
    """

    method: str
    n: int
    n_a: int
    n_b: int
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    t: float | None
    df: float | None
    p: float | None
    confidence: float = 0.95
    seeds: tuple = field(default=())
    note: str | None = None

    @property
    def excludes_zero(self) -> bool | None:
        """True when the interval lies entirely on one side of 0; ``None`` when there is no interval."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low > 0.0 or self.ci_high < 0.0

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``+0.12 [−0.05, +0.29], p = 0.14, n = 3`` (Welch: ``n = 3 + 4``)."""
        n = f"n = {self.n}" if self.method != "welch" else f"n = {self.n_a} + {self.n_b}"
        if self.mean_diff is None:
            return f"n/a ({self.note})" if self.note else "n/a"
        d = format_signed(self.mean_diff * scale, digits)
        if self.ci_low is None:
            return f"{d}, {n} ({self.note})" if self.note else f"{d}, {n}"
        ci = f"[{format_signed(self.ci_low * scale, digits)}, {format_signed(self.ci_high * scale, digits)}]"
        return f"{d} {ci}, {format_p(self.p)}, {n}"

    def interval(self, scale: float = 1.0, digits: int = 2) -> str:
        """The short form for narrow tables: ``+0.12 [−0.05, +0.29]`` (the difference alone without an interval)."""
        if self.mean_diff is None:
            return "n/a"
        d = format_signed(self.mean_diff * scale, digits)
        if self.ci_low is None:
            return d
        return f"{d} [{format_signed(self.ci_low * scale, digits)}, {format_signed(self.ci_high * scale, digits)}]"

    def verdict(self) -> str:
        """One plain sentence on what the interval says."""
        level = f"{round(self.confidence * 100):d}%"
        if self.excludes_zero is None:
            return f"no {level} interval: {self.note}" if self.note else f"no {level} interval"
        if self.excludes_zero:
            side = "B > A" if self.ci_low > 0 else "B < A"
            return f"the {level} CI excludes 0 ({side})"
        return f"the {level} CI includes 0: no clear difference"


def _none(method_note: str, n: int, n_a: int, n_b: int, diff: float | None, confidence: float, seeds=()) -> Comparison:
    return Comparison("none", n, n_a, n_b, diff, None, None, None, None, None, confidence, tuple(seeds), method_note)


def _pairs(a, b) -> tuple[list[float], list[float], tuple]:
    """Values of A and B over the keys both have (mappings), or position by position (equal-length sequences)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = []
        for k in sorted(set(a) & set(b), key=lambda k: (str(type(k)), k)):
            va, vb = a[k], b[k]
            if va is None or vb is None or math.isnan(float(va)) or math.isnan(float(vb)):
                continue
            keys.append(k)
        return [float(a[k]) for k in keys], [float(b[k]) for k in keys], tuple(keys)
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        raise TypeError("paired: pass two mappings seed -> value, or two sequences of equal length")
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"paired: sequences must have equal length, got {len(a)} and {len(b)}")
    keep = [
        i
        for i in range(len(a))
        if a[i] is not None and b[i] is not None and not math.isnan(float(a[i])) and not math.isnan(float(b[i]))
    ]
    return [float(a[i]) for i in keep], [float(b[i]) for i in keep], tuple(keep)


def paired(a, b, confidence: float = 0.95) -> Comparison:
    """Paired t-test of B − A over shared seeds.

    Args:
        a, b: two mappings ``seed -> value`` (paired on the seeds both have) or two equal-length sequences.
        confidence: level of the interval on the mean difference.

    With fewer than two pairs, or identical differences (zero variance), the result has ``method="none"``, no
    interval and no p-value, and ``note`` says why.
    """
    xa, xb, seeds = _pairs(a, b)
    n = len(seeds)
    if n == 0:
        return _none("no shared seeds", 0, 0, 0, None, confidence)
    d = [y - x for x, y in zip(xa, xb, strict=True)]
    m, s = _mean_std(d)
    if s is None:
        return _none("1 pair: no interval or test", 1, 1, 1, m, confidence, seeds)
    if s == 0.0:
        return _none(f"{n} pairs with identical differences: t-test undefined", n, n, n, m, confidence, seeds)
    se = s / math.sqrt(n)
    tq = t_ppf(0.5 + confidence / 2.0, n - 1)
    t = m / se
    p = min(1.0, 2.0 * t_sf(abs(t), n - 1))
    return Comparison("paired", n, n, n, m, m - tq * se, m + tq * se, t, float(n - 1), p, confidence, seeds)


def welch(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> Comparison:
    """Welch's unpaired t-test of mean(B) − mean(A) (unequal variances); needs at least two values on each side."""
    xa, xb = _clean(a.values() if isinstance(a, Mapping) else a), _clean(b.values() if isinstance(b, Mapping) else b)
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        return _none("no values on one side", 0, na, nb, None, confidence)
    ma, sa = _mean_std(xa)
    mb, sb = _mean_std(xb)
    diff = mb - ma
    if sa is None or sb is None:
        return _none(f"n = {na} and {nb}: Welch needs at least 2 values per side", 0, na, nb, diff, confidence)
    va, vb = sa * sa / na, sb * sb / nb
    se2 = va + vb
    if se2 == 0.0:
        return _none("both sides have zero variance: t-test undefined", 0, na, nb, diff, confidence)
    se = math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    tq = t_ppf(0.5 + confidence / 2.0, df)
    t = diff / se
    p = min(1.0, 2.0 * t_sf(abs(t), df))
    return Comparison("welch", 0, na, nb, diff, diff - tq * se, diff + tq * se, t, df, p, confidence)


def compare(a: Mapping, b: Mapping, confidence: float = 0.95) -> Comparison:
    """B − A over seeds: paired when at least two seeds are shared, else Welch when each side has two values.

    ``a`` and ``b`` map seed -> value. The returned ``method`` says which test ran; ``note`` says when the seeds
    only partly match (the paired test then uses the shared seeds only).
    """
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        raise TypeError(f"compare: a and b must map seed -> value, got {type(a).__name__} and {type(b).__name__}")
    res = paired(a, b, confidence)
    ka = {k for k, v in a.items() if v is not None and not math.isnan(float(v))}
    kb = {k for k, v in b.items() if v is not None and not math.isnan(float(v))}
    if res.method == "paired":
        if ka != kb:
            extra = len(ka ^ kb)
            note = f"paired over the {res.n} shared seeds; {extra} unpaired run(s) left out"
            return Comparison(**{**res.__dict__, "note": note})
        return res
    if len(res.seeds) >= 2:  # paired but degenerate (zero variance): say that, do not silently switch tests
        return res
    w = welch(a, b, confidence)
    if w.method == "welch":
        note = "seeds do not match: unpaired Welch test"
        return Comparison(**{**w.__dict__, "note": note})
    if len(res.seeds) == 1:
        return res
    return w
