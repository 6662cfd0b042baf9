"""The statistical primitives of the analysis: the paired bootstrap over questions, percentile intervals,
t-tests, exact McNemar tests and the Holm / Benjamini-Hochberg adjustments (pure numpy/scipy/statsmodels)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05


def boot_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """n_boot x n resampling counts of n questions (each row sums to n), float32 (exact for counts < 2**24)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float32)


def boot_means(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bootstrap means of each column of a Q x m matrix (NaN = absent, weighted out): n_boot x m."""
    values = np.asarray(values, dtype=float).reshape(len(values), -1)
    mask = ~np.isnan(values)
    num = w @ np.where(mask, values, 0.0).astype(np.float32)
    if mask.all():
        return num / values.shape[0]
    den = w @ mask.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def percentile_ci(boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile interval of each column of a bootstrap matrix (NaN draws ignored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
    return lo, hi


def ttest_p(values: np.ndarray) -> np.ndarray:
    """Two-sided one-sample t-test against 0 per column (NaN-aware); NaN where undefined."""
    values = np.asarray(values, dtype=float).reshape(len(values), -1)
    n = (~np.isnan(values)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        se = np.nanstd(values, axis=0, ddof=1) / np.sqrt(n)
        t = mean / se
        p = 2 * stats.t.sf(np.abs(t), df=np.maximum(n - 1, 1))
    p = np.where((se == 0) & (mean == 0), 1.0, p)
    return np.where(n >= 2, p, np.nan)


def holm_bh(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Holm, Benjamini-Hochberg) adjusted p over the non-NaN entries of p; NaN stays NaN."""
    holm, bh = np.full(len(p), np.nan), np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        holm[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
        bh[ok] = multipletests(p[ok], alpha=ALPHA, method="fdr_bh")[1]
    return holm, bh


def mcnemar_p(better, worse) -> np.ndarray:
    """Exact McNemar p from the discordant counts (elementwise): the two-sided binomial test of `better`
    out of better + worse at 1/2, i.e. twice the smaller tail (= scipy.stats.binomtest(...).pvalue); 1.0
    with no discordant pair."""
    better, worse = np.asarray(better), np.asarray(worse)
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(better, worse), better + worse, 0.5))
    return np.where(better + worse > 0, p, 1.0)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Exact (binomial) McNemar p, two-sided, for paired binary outcomes; 1.0 with no discordant pair."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(mcnemar_p((a & ~b).sum(), (~a & b).sum()))
