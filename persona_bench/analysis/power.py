"""Power and minimum detectable effects (MDE) of the report's tests, before a run (the dry-run plan) and after
it (the report): the smallest true difference in accuracy that the test would detect with probability `power`
(80%) at two-sided level alpha (5%) divided by the number of tests in its family (Bonferroni, the first step of
Holm's procedure: the power to detect one effect among nulls; Holm is at least as powerful).

Per persona (the exact McNemar test of persona_effects): the design is paired, so what matters is the
discordance rate d = P(persona and control disagree about a question's correctness). With n questions the
number of discordant questions D ~ Binomial(n, d); given D, the persona wins B ~ Binomial(D, (d + delta) / 2d)
of them, where delta = P(persona right, control wrong) - P(persona wrong, control right) is the difference in
accuracy (so |delta| <= d). `mcnemar_power` sums the exact test's rejection probability over D; `persona_mde`
solves it for delta (inf: not detectable at this size, even if every discordant question went one way).

Per attribute (template, role category, gender, interpersonal, domain match; roles a random factor): a
persona's accuracy = its attributes' effects + a role offset (sd `role_sd`, shared by the role's templates) + its
own sampling noise, whose variance is d / (2n) (two personas disagree about as often as a persona and the
control, and Var(a_k - a_j) = d / n). `attribute_mde` computes the exact variance of the least-squares terms
under that covariance (collinear attributes inflate it) and MDE = (t(1 - alpha' / 2, df) + t(power, df)) * se
with df = roles - role-level terms - 1. After a run, `achieved_mde` applies the same formula to a fitted
table's se and df.

Defaults when no earlier run says otherwise: DEFAULT_DISCORDANCE, DEFAULT_ROLE_SD (see their comments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
from scipy import stats

from persona_bench.analysis.attributes import FACTORS, REFERENCES
from persona_bench.analysis.design import independent_columns
from persona_bench.outputs import CONTROL, PREDICTIONS

POWER = 0.8
ALPHA = 0.05
# Share of questions on which a persona and the control disagree about correctness, when no earlier run
# gives one: measured on the demo (gemma3_270m, cloze scoring, 208 questions x 16 personas, 2026-11-30): mean
# 0.039 over personas, range 0.019-0.053. Larger models disagree more (the MDE grows with its square root).
DEFAULT_DISCORDANCE = 0.04
# Sd of a role's own offset on accuracy (shared by its templates), beyond its attributes: an assumption (the
# size Issue 16's simulations used), not a measurement; the attribute MDE grows with it.
DEFAULT_ROLE_SD = 0.02


def mde_words(x, missing: str = "n/a", undetectable: str = "not detectable", unit: str = "") -> str:
    """A minimum detectable effect (accuracy) in points, e.g. '1.9' + unit; `missing` for None or NaN (an aliased or
    unestimable term), `undetectable` for infinity (no effect is detectable at this size)."""
    if x is None or x != x:
        return missing
    return undetectable if x == float("inf") else f"{100 * x:.1f}{unit}"


def _rejection_bound(d: np.ndarray, alpha: float) -> np.ndarray:
    """Largest k with 2 * P(Bin(d, 1/2) <= k) < alpha (the exact McNemar test, analysis.stats.mcnemar_p,
    rejects when min(B, d - B) <= k); -1 where it never rejects."""
    k = stats.binom.ppf(alpha / 2, d, 0.5) - 1
    k = np.where(stats.binom.cdf(k + 1, d, 0.5) < alpha / 2, k + 1, k)  # guard ppf's rounding
    return np.where((k >= 0) & (stats.binom.cdf(k, d, 0.5) >= alpha / 2), k - 1, k)


def mcnemar_power(delta, n: int, discordance: float, alpha: float = ALPHA) -> np.ndarray:
    """Probability that the exact two-sided McNemar test at level alpha rejects, for a true accuracy difference
    delta (scalar or array, |delta| <= discordance) on n paired questions with this discordance rate."""
    delta = np.atleast_1d(np.asarray(delta, dtype=float))
    d = np.arange(n + 1)
    weight = stats.binom.pmf(d, n, discordance)
    k = _rejection_bound(d, alpha)
    q = np.clip((discordance + delta) / (2 * discordance), 0, 1)[:, None]
    reject = stats.binom.cdf(k, d, q) + stats.binom.sf(d - k - 1, d, q) * (k >= 0)
    return (reject * weight).sum(axis=1)


def persona_mde(n: int, discordance: float, alpha: float = ALPHA, n_tests: int = 1, power: float = POWER) -> float:
    """Smallest accuracy difference the exact McNemar test at alpha / n_tests detects with probability `power`
    on n questions (bisection on mcnemar_power); inf when not even delta = discordance reaches it."""
    a = alpha / max(n_tests, 1)
    if n < 1 or not discordance > 0 or mcnemar_power(discordance, n, discordance, a)[0] < power:
        return float("inf")
    lo, hi = 0.0, float(discordance)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mcnemar_power(mid, n, discordance, a)[0] < power else (lo, mid)
    return hi


def achieved_mde(se, df, n_tests: int, alpha: float = ALPHA, power: float = POWER) -> np.ndarray:
    """MDE of t-tests with these standard errors and degrees of freedom (inf df: normal; df missing or <= 0: NaN,
    no test) at alpha / n_tests."""
    se, df = np.asarray(se, dtype=float), np.asarray(df, dtype=float)
    df = np.where(df > 0, df, np.nan)
    a = alpha / max(n_tests, 1)
    return (stats.t.ppf(1 - a / 2, df) + stats.t.ppf(power, df)) * se


def achieved(persona_effects: pd.DataFrame, attributes: Optional[pd.DataFrame] = None, alpha: float = ALPHA,
             power: float = POWER) -> dict:
    """The MDEs a finished run had: per persona at the observed mean discordance ((n_better + n_worse) /
    n_questions, averaged over personas) and the median number of questions, corrected for the number of
    personas; per attribute term from the fitted model's se and df (attributes: term, se, df, p), corrected
    for the number of terms."""
    pe = persona_effects
    n_q = pd.to_numeric(pe.get("n_questions", pd.Series(dtype=float)), errors="coerce")
    out = {"alpha": alpha, "power": power, "n_personas": int(len(pe)), "n_questions": None, "discordance": None,
           "persona_mde": None, "attributes": None}
    if len(pe) and n_q.notna().any() and {"n_better", "n_worse"} <= set(pe.columns):
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = float(np.nanmean((pe["n_better"] + pe["n_worse"]) / n_q))
        n = int(n_q.median())
        out.update(n_questions=n, discordance=rate,
                   persona_mde=persona_mde(n, rate, alpha, n_tests=int(pe["p"].notna().sum()) if "p" in pe else len(pe),
                                           power=power) if np.isfinite(rate) else None)
    if attributes is not None and len(attributes) and {"se", "df"} <= set(attributes.columns):
        cols = [c for c in ("term", "estimate", "se", "df") if c in attributes]
        t = attributes[cols].copy()
        n_tests = int(attributes["p"].notna().sum()) if "p" in attributes else len(attributes)
        t["mde"] = achieved_mde(attributes["se"], attributes["df"], n_tests, alpha, power)
        out["attributes"] = t.reset_index(drop=True)
        out["attribute_tests"] = n_tests
    return out


def discordance(df: pd.DataFrame) -> float:
    """Mean over personas of the share of their questions on which persona and control disagree about
    correctness (predictions table: question_id, template with the control, role, correct)."""
    ctrl = df.loc[df["template"] == CONTROL].drop_duplicates("question_id").set_index("question_id")["correct"]
    pers = df.loc[df["template"] != CONTROL, ["question_id", "template", "role", "correct"]]
    c = pers["question_id"].map(ctrl)
    ok = c.notna() & pers["correct"].notna()
    if not ok.any():
        return float("nan")
    differ = pers.loc[ok, "correct"].astype(bool).to_numpy() != c[ok].astype(bool).to_numpy()
    return float(pd.Series(differ).groupby([pers.loc[ok, "template"].to_numpy(),
                                            pers.loc[ok, "role"].to_numpy()]).mean().mean())


def prior_discordance(folders: Iterable[Path]) -> tuple[Optional[float], Optional[str]]:
    """(discordance, the predictions file it came from) of the first folder holding a complete run's
    predictions; (None, None) where none does."""
    for folder in folders:
        path = Path(folder) / PREDICTIONS
        if path.is_file():
            try:
                df = pd.read_parquet(path, columns=["question_id", "template", "role", "correct"])
            except (OSError, ValueError, KeyError):
                continue
            rate = discordance(df)
            if np.isfinite(rate) and rate > 0:
                return rate, str(path)
    return None, None


def attribute_design(personas: pd.DataFrame) -> tuple[list[tuple[str, str, str]], list[np.ndarray]]:
    """Reference-coded (factor, level, reference) terms of the persona attributes and their 0/1 columns, coded
    as the attribute model codes them (analysis.attributes: FACTORS in its order, its reference levels)."""
    terms, cols = [], []
    for f in FACTORS:
        if f not in personas:
            continue
        v = personas[f].astype(object).where(personas[f].notna(), "(none)").astype(str)
        counts = v.value_counts()
        if len(counts) < 2:
            continue
        ref = REFERENCES.get(f) if REFERENCES.get(f) in counts.index else counts.index[0]
        for lv in sorted(counts.index):
            if lv != ref:
                terms.append((f, str(lv), str(ref)))
                cols.append((v == lv).to_numpy(float))
    return terms, cols


def attribute_mde(personas: pd.DataFrame, n_questions: int, discordance: float, role_sd: float = DEFAULT_ROLE_SD,
                  in_domain: Optional[pd.Series] = None, alpha: float = ALPHA, power: float = POWER) -> pd.DataFrame:
    """Planned MDE per attribute term, roles a random factor (see the module docstring).

    personas: one row per persona: template, role and the role's attributes as analysis.attributes labels them
    (role_category, interpersonal "interpersonal"/"non-interpersonal", gender, domain_role "domain role"/"no
    domain"); in_domain: optional, per role with a domain, the number of questions of its domain (adds the term
    domain_match=in-domain: a role's difference on its domain's questions against its other questions, with variance
    d * (1/n_in + 1/n_out) + role_sd^2 per role, averaged over those roles, df = their number - 1).
    Aliased terms (analysis.design.independent_columns, in the model's order) get no se and no MDE.
    Columns: term, factor, level, reference, n_roles (roles with the level), se, df, mde; the family's size (the
    Bonferroni divisor) is the number of estimable terms.
    """
    personas = personas.reset_index(drop=True)
    terms, cols = attribute_design(personas)
    roles = pd.factorize(personas["role"])[0]
    n_roles = int(roles.max()) + 1 if len(roles) else 0
    rows = []
    if cols:
        x = np.column_stack([np.ones(len(personas))] + cols)
        keep, _ = independent_columns(x, ["(intercept)"] + [f"{f}={lv}" for f, lv, _ in terms])
        xk = x[:, keep]
        z = np.eye(n_roles)[roles]
        sigma = role_sd ** 2 * (z @ z.T) + discordance / (2 * n_questions) * np.eye(len(personas))
        a = np.linalg.solve(xk.T @ xk, xk.T)
        se = dict(zip(keep, np.sqrt(np.diag(a @ sigma @ a.T))))
        role_terms = sum(1 for j in keep if j > 0 and terms[j - 1][0] != "template")
        dof = max(n_roles - role_terms - 1, 1)
        for j, (f, lv, ref) in enumerate(terms, start=1):
            rows.append({"term": f"{f}={lv}", "factor": f, "level": lv, "reference": ref,
                         "n_roles": int(personas.loc[cols[j - 1] > 0, "role"].nunique()),
                         "se": se.get(j, np.nan), "df": dof if j in se else np.nan})  # aliased: not estimable
    if in_domain is not None and len(in_domain):
        n_in = np.clip(in_domain.to_numpy(float), 1, max(n_questions - 1, 1))
        var = (discordance * (1 / n_in + 1 / (n_questions - n_in)) + role_sd ** 2).mean() / len(n_in)
        rows.append({"term": "domain_match=in-domain", "factor": "domain_match", "level": "in-domain",
                     "reference": "out-of-domain (same role)",
                     "n_roles": int(len(n_in)), "se": float(np.sqrt(var)), "df": max(len(n_in) - 1, 1)})
    out = pd.DataFrame(rows, columns=["term", "factor", "level", "reference", "n_roles", "se", "df"])
    out["mde"] = achieved_mde(out["se"], out["df"], n_tests=max(int(out["se"].notna().sum()), 1), alpha=alpha,
                              power=power)
    return out
