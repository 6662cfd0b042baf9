"""The statistical primitives of the analysis: the paired bootstrap over questions, percentile intervals,
t-tests, exact McNemar tests and the Holm / Benjamini-Hochberg adjustments (pure numpy/scipy/statsmodels)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

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


METHODS = {"holm": "Holm (family-wise error)", "fdr_bh": "Benjamini-Hochberg (false discovery rate)"}


def adjust_p(p, method: str) -> np.ndarray:
    """Corrected p over the non-NaN entries of each row (1-D: one family; 2-D: one family per row, e.g. per
    simulated report); NaN stays NaN. method "holm": min(1, max over j <= i of (m - j + 1) p_(j)); "fdr_bh":
    min(1, min over j >= i of m p_(j) / j); p_(j) the j-th smallest of the row's m p-values. The same values as
    statsmodels' multipletests, which runs gc.collect() on every call (60 ms in a large process)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; valid: {', '.join(METHODS)}")
    p = np.asarray(p, dtype=float)
    flat = p.ndim == 1
    p = np.atleast_2d(p)
    order = np.argsort(p, axis=1, kind="stable")  # NaN last
    ps = np.take_along_axis(p, order, axis=1)
    m = (~np.isnan(p)).sum(axis=1, keepdims=True)
    j = np.arange(1, p.shape[1] + 1)[None, :]
    if method == "holm":
        adj = np.maximum.accumulate(np.where(j <= m, (m - j + 1) * ps, -np.inf), axis=1)
    else:
        adj = np.minimum.accumulate(np.where(j <= m, m * ps / j, np.inf)[:, ::-1], axis=1)[:, ::-1]
    adj = np.where(j <= m, np.minimum(adj, 1.0), np.nan)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=1)
    return out[0] if flat else out


def holm_bh(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Holm, Benjamini-Hochberg) adjusted p over the non-NaN entries of p; NaN stays NaN."""
    p = np.asarray(p, dtype=float)
    return adjust_p(p, "holm"), adjust_p(p, "fdr_bh")


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
