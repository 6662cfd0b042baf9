"""Claims of no effect: two one-sided tests (TOST) of |effect| < margin, and the verdict of each row.

A difference test that does not reject says nothing about the absence of an effect; the equivalence test
does: it rejects "the effect is at least `margin`" (H0: delta <= -margin or delta >= margin) when both
one-sided tests reject, i.e. p_equiv = max(P(T >= (est + margin) / se), P(T <= (est - margin) / se)), with T
a t variable with the row's degrees of freedom (normal where there are none). p_equiv < alpha is the same
as the 1 - 2 alpha (90%) interval lying inside (-margin, margin).

Per persona (paired binary outcomes on n questions, b questions better and w worse than the control), the
standard error is Agresti and Min's (2005): the Wald se of a difference of paired proportions with 0.5
added to each of the four cells of the paired table, so that a persona with no or few discordant questions
on few questions is not declared equivalent on a plug-in se of 0.

Verdicts (`verdicts`): "effect" (significant after the family's correction), "effect smaller than M" (also
equivalent: a real but small effect), "no effect larger than M" (equivalent after the family's correction,
not significant), "inconclusive" (neither), "" (no test).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

DEFAULT_MARGIN = 0.01  # one accuracy point (report.equivalence_margin)


def paired_se(n_better, n_worse, n) -> np.ndarray:
    """Agresti-Min standard error of the accuracy difference of paired binary outcomes (0.5 added to each cell
    of the 2 x 2 table, so n grows by 2); NaN where n < 1."""
    b = np.asarray(n_better, dtype=float) + 0.5
    w = np.asarray(n_worse, dtype=float) + 0.5
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = n + 2.0
        var = ((b + w) / m - ((b - w) / m) ** 2) / m
        return np.where(n >= 1, np.sqrt(np.maximum(var, 0.0)), np.nan)


def tost_p(estimate, se, margin: float, df=np.inf) -> np.ndarray:
    """TOST p-value of |effect| < margin for each row, t with df degrees of freedom (inf: normal); NaN where
    estimate, se or df is missing or df <= 0; se 0: 0 inside the margin, 1 outside."""
    est, se = np.asarray(estimate, dtype=float), np.asarray(se, dtype=float)
    df = np.asarray(df, dtype=float)
    df = np.where(df > 0, df, np.nan)  # inf: normal; missing or <= 0: no test
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = stats.t.sf((est + margin) / se, df)  # H0: effect <= -margin
        upper = stats.t.cdf((est - margin) / se, df)  # H0: effect >= margin
        p = np.maximum(lower, upper)
    p = np.where(se == 0, np.where(np.abs(est) < margin, 0.0, 1.0), p)
    return np.where(np.isnan(est) | np.isnan(se) | np.isnan(df), np.nan, p)


def margin_words(margin: float) -> str:
    """'1 point' for 0.01, '0.5 points' for 0.005: the margin in accuracy points."""
    pts = 100 * margin
    return f"{pts:g} point" + ("" if pts == 1 else "s")


def verdicts(significant, equivalent, tested, margin: float) -> np.ndarray:
    """One verdict per row (see the module docstring) from the corrected decisions."""
    sig, eq, ok = (np.asarray(v, dtype=bool) for v in (significant, equivalent, tested))
    m = margin_words(margin)
    out = np.where(sig, np.where(eq, f"effect smaller than {m}", "effect"),
                   np.where(eq, f"no effect larger than {m}", "inconclusive"))
    return np.where(ok, out, "").astype(object)
