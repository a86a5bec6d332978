"""Statistics over seeds, against values worked out by hand (closed forms of the t distribution, printed tables)
and against scipy's own paired and Welch t-tests."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from encouraging.results.stats import (
    compare,
    format_p,
    format_signed,
    mean_std_text,
    paired,
    summarize,
    t_ppf,
    t_sf,
    welch,
)

# two-sided 95% critical values of Student's t, as printed in any t table (to 10+ digits)
T975 = {1: 12.706204736174698, 2: 4.302652729749464, 3: 3.182446305284263, 4: 2.7764451051977987,
        10: 2.2281388519649385, 30: 2.0422724563012373}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# t distribution
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_tables(df):
    assert t_ppf(0.975, df) == pytest.approx(T975[df], rel=1e-10)
    assert t_ppf(0.025, df) == pytest.approx(-T975[df], rel=1e-10)
    assert t_sf(T975[df], df) == pytest.approx(0.025, rel=1e-9)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 7.0, 40.0, -1.7])
def test_t_tail_matches_closed_forms(t):
    # df = 1 (Cauchy): P(T > t) = 1/2 - atan(t)/pi;  df = 2: P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2
    assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-10, abs=1e-15)
    assert t_sf(t, 2) == pytest.approx((1 - t / math.sqrt(t * t + 2)) / 2, rel=1e-10, abs=1e-15)


def test_t_argument_errors():
    with pytest.raises(ValueError, match="q must be in"):
        t_ppf(1.0, 3)
    with pytest.raises(ValueError, match="df must be > 0"):
        t_sf(1.0, 0)


# ---------------------------------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------------------------------


def test_summary_by_hand():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3
    assert s.n == 4 and s.mean == 2.5 and s.std == pytest.approx(math.sqrt(5 / 3), rel=1e-15)
    half = T975[3] * math.sqrt(5 / 3) / 2
    assert (s.ci_low, s.ci_high) == (pytest.approx(2.5 - half, rel=1e-10), pytest.approx(2.5 + half, rel=1e-10))
    assert (s.min, s.max) == (1.0, 4.0) and s.note is None
    assert summarize([0.9912, 0.9915, 0.9921]).format(scale=100) == "99.16 ± 0.05"


def test_summary_with_too_few_values_says_so():
    one = summarize([0.5])
    assert one.n == 1 and one.mean == 0.5 and one.std is None and one.ci_low is None and "n = 1" in one.note
    assert one.format(100) == "50.00 (n = 1)"
    none = summarize([])
    assert none.n == 0 and none.mean is None and none.format() == "n/a"
    assert summarize([1.0, float("nan"), None, 3.0]).n == 2  # NaN and None are dropped


# ---------------------------------------------------------------------------------------------------------------------
# paired and Welch comparisons
# ---------------------------------------------------------------------------------------------------------------------


def test_paired_by_hand():
    a = {0: 0.90, 1: 0.91, 2: 0.92}
    b = {0: 0.92, 1: 0.92, 2: 0.95}
    c = paired(a, b)
    # differences 0.02, 0.01, 0.03: mean 0.02, sd 0.01, se 0.01 / sqrt(3), t = 2 sqrt(3), df = 2
    t = 2 * math.sqrt(3)
    assert c.method == "paired" and c.n == 3 and c.seeds == (0, 1, 2)
    assert c.mean_diff == pytest.approx(0.02, abs=1e-15)
    assert c.t == pytest.approx(t, rel=1e-9) and c.df == 2
    assert c.p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)  # two-sided, closed form for df = 2
    half = T975[2] * 0.01 / math.sqrt(3)
    assert c.ci_low == pytest.approx(0.02 - half, rel=1e-9) and c.ci_high == pytest.approx(0.02 + half, rel=1e-9)
    assert c.excludes_zero is False
    assert c.format(scale=100) == "+2.00 [\u22120.48, +4.48], p = 0.07, n = 3"
    assert "includes 0" in c.verdict()


def test_paired_is_b_minus_a_and_sequences_pair_by_position():
    c = paired([3.0, 4.0, 5.0], [1.0, 1.5, 2.5])
    assert c.mean_diff == pytest.approx(-7 / 3) and c.ci_high < 0 and c.excludes_zero is True
    assert "excludes 0 (B < A)" in c.verdict()
    with pytest.raises(ValueError, match="equal length"):
        paired([1.0, 2.0], [1.0])


def test_paired_with_too_few_pairs_invents_nothing():
    one = paired({0: 0.9, 1: 0.8}, {0: 0.95, 2: 0.7})  # only seed 0 is shared
    assert one.method == "none" and one.n == 1 and one.p is None and one.ci_low is None
    assert one.mean_diff == pytest.approx(0.05) and "1 pair" in one.note
    assert one.format(100) == "+5.00, n = 1 (1 pair: no interval or test)"
    assert one.excludes_zero is None and "no 95% interval" in one.verdict()
    assert paired({0: 1.0}, {1: 1.0}).note == "no shared seeds"
    flat = paired([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])  # identical differences: the t statistic is undefined
    assert flat.method == "none" and flat.p is None and "identical differences" in flat.note


def test_welch_by_hand():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    c = welch(a, b)
    # mean 2 and 5; var 1 and 20/3; se^2 = 1/3 + 5/3 = 2; df = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 216/53
    df = 216 / 53
    assert c.method == "welch" and (c.n_a, c.n_b) == (3, 4)
    assert c.mean_diff == pytest.approx(3.0) and c.t == pytest.approx(3 / math.sqrt(2)) and c.df == pytest.approx(df)
    half = t_ppf(0.975, df) * math.sqrt(2)
    assert c.ci_low == pytest.approx(3 - half) and c.ci_high == pytest.approx(3 + half)
    assert c.p == pytest.approx(2 * t_sf(3 / math.sqrt(2), df))
    ref = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-9) and c.t == pytest.approx(ref.statistic, rel=1e-12)
    assert c.format().endswith("n = 3 + 4")
    assert welch([1.0], [2.0, 3.0]).method == "none"


def test_paired_matches_scipy_ttest_rel():
    a = [0.981, 0.979, 0.984, 0.980, 0.983]
    b = [0.985, 0.982, 0.984, 0.986, 0.985]
    ref = scipy_stats.ttest_rel(b, a)
    c = paired(a, b)
    assert c.t == pytest.approx(ref.statistic, rel=1e-12) and c.p == pytest.approx(ref.pvalue, rel=1e-12)


def test_compare_picks_the_test_and_says_which():
    a = {0: 0.90, 1: 0.91, 2: 0.92, 3: 0.95}
    b = {0: 0.92, 1: 0.92, 2: 0.95}
    c = compare(a, b)
    assert c.method == "paired" and c.n == 3 and "1 unpaired run" in c.note
    assert compare({0: 0.9, 1: 0.92}, {0: 0.91, 1: 0.95}).note is None
    w = compare({0: 0.90, 1: 0.91}, {5: 0.92, 6: 0.95})
    assert w.method == "welch" and "Welch" in w.note
    n = compare({0: 0.9}, {1: 0.95})
    assert n.method == "none" and "at least 2" in n.note
    with pytest.raises(TypeError, match="seed -> value"):
        compare([0.9], [0.95])  # type: ignore[arg-type]


def test_formatting():
    assert format_signed(0.12) == "+0.12"
    assert format_signed(-0.05) == "\u22120.05"
    assert format_signed(-0.0001) == "+0.00"
    # a diverging model's margins (1.9e8) in fixed notation would be eleven digits of noise
    assert format_signed(-193984285.3) == "\u22121.94e+08" and format_signed(999999.0) == "+999999.00"
    assert mean_std_text([1.5e8, 2.5e8]) == "2.00e+08 ± 7.07e+07" and mean_std_text([0.5, 1.5]) == "1.00 ± 0.71"
    assert format_p(0.1449) == "p = 0.14"
    assert format_p(0.0031) == "p = 0.0031"
    assert format_p(3e-7) == "p < 0.0001"
    assert format_p(None) == "p = n/a"
