"""The best persona, selection-aware: empirical-Bayes shrunken differences to control and confidence intervals
for ranks (numpy, pandas, scipy).

With hundreds of personas the largest raw difference to control is biased upward (the winner's curse) and its
ordinary interval ignores that it was picked as the largest. Two remedies, one row per persona:

Shrinkage (normal-normal empirical Bayes). A persona's difference to control is split into the mean over
personas, M (per question: the personas' mean correctness minus the control's; its standard error from the
questions), and the persona's deviation from that mean, e_k (per question: the persona's correctness minus the
personas' mean on the question). The control's noise is common to every persona and cancels in e_k, so the
deviations' sampling errors are close to independent across personas (they are not independent in the raw
differences: two personas' differences share the control's answer on every question, a correlation near 1/2).
Model: e_k ~ N(t_k, s_k^2), s_k the standard error of e_k over questions; t_k ~ N(mu, tau^2), one prior for all
personas (one prior per template was tried: with sparse single-role effects it shrinks them harder and covered
less, docs/statistics.md). mu and tau^2 by REML (the random-effects meta-analysis estimator, iterated from
DerSimonian-Laird's). The posterior of t_k: mean
mu + B_k (e_k - mu), B_k = tau^2 / (tau^2 + s_k^2), variance B_k s_k^2 + (1 - B_k)^2 / sum(w) (the second
term: mu estimated); the shrunken difference is M + that mean, its 95% interval adds M's variance (M and e_k are
uncorrelated when personas are exchangeable on a question). tau^2 is plugged in (its own uncertainty is not
propagated). The normal prior is an assumption, and it fails for a lone persona far from all the others: such a
persona is shrunk too far, and its interval misses its true difference. `prior_outlier` flags the personas whose
deviation the fitted prior does not explain (|e_k - mu| / sqrt(tau^2 + s_k^2) beyond the Bonferroni two-sided 5%
critical value over the K personas); for them read the simultaneous interval instead.

Simultaneous intervals: delta_k +- c se_k with c the 95% bootstrap quantile of max_k |delta*_k - delta_k| / se_k
over all K personas (se_k the bootstrap standard deviation): all K cover together in 95% of samples, so the
interval of a persona picked after looking (the largest raw one) keeps its 95%, without any prior.

Ranks (Mogstad, Romano, Shaikh and Wu, 2024: marginal confidence sets for ranks). Rank 1 = best. For persona k,
the differences delta_j - delta_k to every other persona, with standard errors and a bootstrap critical value
c_k (95% quantile over resamples of questions of max_j |difference - estimate| / se); the rank's interval runs
from 1 + #(j significantly above k) to K - #(j significantly below k). It holds whatever the distribution of the
true differences, and is wide when personas are alike.

shrink(df, n_boot, seed, grid) -> one row per persona: template, role, n_questions, delta (raw), se (of delta),
deviation (e_k), deviation_se (s_k), shrunken, ci_low, ci_high (EB 95%), prior_outlier, sim_ci_low, sim_ci_high
(simultaneous 95%), rank (by raw delta, 1 = best; ties share the best rank), rank_ci_low, rank_ci_high.
attrs: mean_delta (M), mean_delta_se, mu, tau (the prior's).
best_persona(table): the persona with the largest shrunken difference, with both its intervals, its rank interval
and how many personas could be the best (rank interval reaching 1).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from persona_bench.analysis.matrix import PersonaMatrix
from persona_bench.analysis.stats import boot_means, boot_weights

Z95 = 1.959963984540054
COLUMNS = ["template", "role", "n_questions", "delta", "se", "deviation", "deviation_se", "shrunken", "ci_low",
           "ci_high", "prior_outlier", "sim_ci_low", "sim_ci_high", "rank", "rank_ci_low", "rank_ci_high"]


def reml_tau2(e: np.ndarray, s2: np.ndarray, n_iter: int = 200, tol: float = 1e-12) -> tuple[float, float, float]:
    """(tau^2, mu, var(mu)) of the random-effects model e_k ~ N(mu, tau^2 + s2_k) by REML (Fisher scoring,
    Viechtbauer 2005), started from DerSimonian-Laird's moment estimate; tau^2 >= 0."""
    w = 1 / s2
    mu = np.sum(w * e) / w.sum()
    q = np.sum(w * (e - mu) ** 2)
    tau2 = max(0.0, (q - (len(e) - 1)) / (w.sum() - np.sum(w * w) / w.sum()))
    for _ in range(n_iter):
        w = 1 / (s2 + tau2)
        mu = np.sum(w * e) / w.sum()
        new = max(0.0, np.sum(w * w * ((e - mu) ** 2 - s2)) / np.sum(w * w) + 1 / w.sum())
        if abs(new - tau2) < tol:
            tau2 = new
            break
        tau2 = new
    w = 1 / (s2 + tau2)
    return float(tau2), float(np.sum(w * e) / w.sum()), float(1 / w.sum())


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _se(x: np.ndarray) -> np.ndarray:
    """Standard error of the column means of a Q x K matrix (NaN = absent)."""
    n = (~np.isnan(x)).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(x, axis=0, ddof=1) / np.sqrt(n)


def rank_intervals(est: np.ndarray, boot: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Marginal (1 - alpha) confidence intervals for the ranks (1 = largest) of K estimates from an n_boot x K
    bootstrap matrix (Mogstad et al. 2024): for each k, max-t over its K - 1 pairwise differences."""
    k_n = len(est)
    lo, hi = np.ones(k_n, dtype=int), np.full(k_n, k_n, dtype=int)
    boot = np.asarray(boot, dtype=np.float64)
    for k in range(k_n):
        diff = est - est[k]  # j minus k
        centred = (boot - boot[:, [k]]) - diff
        with np.errstate(invalid="ignore", divide="ignore"):
            se = centred.std(axis=0)  # NaN for a persona absent from some resample: left out below
            t = np.abs(centred) / se
        others = np.arange(k_n) != k
        ok = others & (se > 0)
        if not ok.any():
            continue
        c = np.quantile(t[:, ok].max(axis=1), 1 - alpha)
        above = ok & (diff - c * se > 0)
        below = ok & (diff + c * se < 0)
        # personas identical to k on every resample (se 0) but with a different estimate are known to be above/below
        above |= others & (se == 0) & (diff > 0)
        below |= others & (se == 0) & (diff < 0)
        lo[k], hi[k] = 1 + above.sum(), k_n - below.sum()
    return lo, hi


def simultaneous_intervals(est: np.ndarray, boot: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(1 - alpha) simultaneous intervals est +- c se from an n_boot x K bootstrap matrix (max-t over the K
    estimates; se the bootstrap standard deviation; estimates with se 0 or absent from a resample left out of the
    maximum)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        se = boot.std(axis=0)
        ok = np.isfinite(se) & (se > 0)
        if not ok.any():
            return est - 0 * se, est + 0 * se
        c = np.quantile((np.abs(boot[:, ok] - est[ok]) / se[ok]).max(axis=1), 1 - alpha)
    return est - c * se, est + c * se


def shrink(df: Optional[pd.DataFrame] = None, n_boot: int = 2000, seed: int = 0,
           grid: Optional[PersonaMatrix] = None) -> pd.DataFrame:
    """One row per persona: raw and shrunken difference to control, EB interval, rank interval (module doc)."""
    g = grid if grid is not None else PersonaMatrix.from_predictions(df)
    c = g.correct
    k_n = c.shape[1]
    d = g.diff
    delta = _nanmean(d, 0)
    m_q = _nanmean(c, 1)  # the personas' mean correctness per question
    has = ~np.isnan(m_q)
    gap = (m_q - g.control)[has]
    mean_delta = float(gap.mean()) if has.any() else np.nan
    mean_se = float(gap.std(ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else np.nan
    dev = c - m_q[:, None]
    e, s = _nanmean(dev, 0), _se(dev)
    out = g.personas[["template", "role"]].copy()
    out["n_questions"] = (~np.isnan(c)).sum(axis=0)
    out["delta"], out["se"] = delta, _se(d)
    out["deviation"], out["deviation_se"] = e, s
    ok = np.isfinite(e) & np.isfinite(s)
    shr, lo, hi = np.full(k_n, np.nan), np.full(k_n, np.nan), np.full(k_n, np.nan)
    outlier = np.zeros(k_n, dtype=bool)
    tau2 = mu = np.nan
    if ok.sum() >= 3:
        s2 = np.maximum(s[ok] ** 2, 1e-12)
        tau2, mu, var_mu = reml_tau2(e[ok], s2)
        b = tau2 / (tau2 + s2)
        var = b * s2 + (1 - b) ** 2 * var_mu + mean_se ** 2
        shr[ok] = mean_delta + mu + b * (e[ok] - mu)
        lo[ok], hi[ok] = shr[ok] - Z95 * np.sqrt(var), shr[ok] + Z95 * np.sqrt(var)
        outlier[ok] = np.abs(e[ok] - mu) / np.sqrt(tau2 + s2) > stats.norm.isf(0.025 / ok.sum())
    out["shrunken"], out["ci_low"], out["ci_high"], out["prior_outlier"] = shr, lo, hi, outlier
    finite = np.where(np.isnan(delta), -np.inf, delta)
    out["rank"] = 1 + (finite[None, :] > finite[:, None]).sum(axis=1)
    out["sim_ci_low"], out["sim_ci_high"] = np.nan, np.nan
    out["rank_ci_low"], out["rank_ci_high"] = 1, k_n
    if k_n:
        boot = np.asarray(boot_means(d, boot_weights(len(d), n_boot, seed)), dtype=np.float64)
        out["sim_ci_low"], out["sim_ci_high"] = simultaneous_intervals(delta, boot)
        out["rank_ci_low"], out["rank_ci_high"] = rank_intervals(finite, boot)
    out.attrs.update(mean_delta=mean_delta, mean_delta_se=mean_se, mu=mu, tau=float(np.sqrt(tau2)))
    return out[COLUMNS]


def best_persona(table: pd.DataFrame) -> dict:
    """The persona with the largest shrunken difference (ties: the larger raw one), as one record: persona
    ("template: role"), template, role, delta (raw), shrunken, ci_low, ci_high (EB), prior_outlier, sim_ci_low,
    sim_ci_high, rank_ci_low, rank_ci_high,
    n_could_be_best (personas whose rank interval reaches 1); {} for an empty table."""
    t = table[table["shrunken"].notna()]
    if not len(t):
        return {}
    best = t.sort_values(["shrunken", "delta"], ascending=False, kind="stable").iloc[0]
    return {"persona": f"{best['template']}: {best['role']}", "template": best["template"], "role": best["role"],
            "delta": float(best["delta"]),
            "shrunken": float(best["shrunken"]), "ci_low": float(best["ci_low"]), "ci_high": float(best["ci_high"]),
            "prior_outlier": bool(best["prior_outlier"]), "sim_ci_low": float(best["sim_ci_low"]),
            "sim_ci_high": float(best["sim_ci_high"]),
            "rank_ci_low": int(best["rank_ci_low"]), "rank_ci_high": int(best["rank_ci_high"]),
            "n_could_be_best": int((table["rank_ci_low"] == 1).sum())}
