"""Statistics over one model's predictions: do personas change accuracy, and which ones? (pure pandas/numpy/scipy)

Input: the predictions table of one model (report contract: question_id, template with "control" for the
no-persona prompt, role, role_category, gender, domain, interpersonal, in_domain, correct; one control row per
question). A persona is a (template, role) pair. Every interval is a 95% interval. Questions are the unit of
resampling everywhere: a persona's answers on one question are strongly correlated with the control's, so every
comparison is paired on the same questions.

Each analysis pivots the table with matrix.PersonaMatrix.from_predictions (questions in control-row order; a
persona's missing answers are NaN and left out of its means), or takes `grid=`, a matrix built once for several
analyses. The bootstrap and test primitives (boot_weights, boot_means, percentile_ci, ttest_p, holm_bh, mcnemar_p)
live in analysis.stats.

API (tables are DataFrames; `to_records` turns any result into JSON-ready records, NaN -> None):
- persona_effects(df, n_boot=2000, seed=0): one row per persona: template, role, role_category, gender, domain,
  interpersonal, n_questions, accuracy, control_accuracy (same questions), delta, ci_low, ci_high (paired percentile
  bootstrap over questions), n_better, n_worse (discordant pairs), p (exact McNemar: two-sided binomial test on the
  discordant pairs), p_holm (Holm over all personas of the model: family-wise error 5%), q_bh (Benjamini-Hochberg),
  significant (p_holm < 0.05: **Holm decides**), direction ("better"/"worse"/"").
- group_effects(df, by, n_boot, seed): one row per level of `by` (template, role_category, gender, domain,
  interpersonal): n_personas, n_questions, accuracy (mean over the level's personas), control_accuracy, delta,
  ci_low, ci_high (bootstrap over questions), p (one-sample t-test over questions of the per-question difference).
- contrasts(df, n_boot, seed, pairs=None): rows contrast, factor, level_a, level_b, n_personas_a, n_personas_b,
  n_questions, estimate (mean accuracy of A's personas minus B's, same questions), ci_low, ci_high, p (as above).
  Default pairs: persona - control, every template pair (later minus earlier, on roles present in both),
  interpersonal - non-interpersonal, gender neutral - gendered (female and male pooled), female - male.
- domain_match(df, n_boot, seed): dict: n_roles, n_pairs_in, n_pairs_out, in_domain and out_of_domain (delta to
  control over (persona, question) pairs with an in-/out-of-domain question, each {estimate, ci_low, ci_high}),
  difference (in minus out: a difference-in-differences), ci_low, ci_high, p (normal approximation with a
  question-clustered, linearised standard error).
- regression(df, outcome="correct", estimator="within"): dict: specification (exact text), estimator, coefficients
  (term, factor, level, reference, estimate, se, ci_low, ci_high, p), n_obs, n_questions, n_personas, converged,
  dropped (aliased or single-level terms).
- randomness(df, n_splits=200, seed): dict of per-question spread and split-half stability of the best persona.
- rank_agreement(per_model, on="accuracy"): model_a, model_b, n_roles, spearman, ci_low, ci_high (Fisher z with the
  Bonett-Wright variance), p.
- side_by_side(per_model, n_boot, seed): one row per model (control, persona mean, delta with CI and p, best persona,
  share of personas significant after Holm).
- analyse(df, n_boot=2000, seed=0, grid=None): all of the above for one model, in one dict.
"""

from __future__ import annotations

import warnings
from itertools import combinations
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from persona_bench.analysis.matrix import (
    ATTRIBUTES,
    GROUP_FACTORS,
    NONE,
    PersonaMatrix,
)
from persona_bench.analysis.stats import (
    ALPHA,
    boot_means,
    boot_weights,
    holm_bh,
    mcnemar_p,
    percentile_ci,
    ttest_p,
)
from persona_bench.outputs import CONTROL


def _matrix(df: pd.DataFrame, grid: Optional[PersonaMatrix]) -> PersonaMatrix:
    """The matrix the caller built once for several analyses, else one from df (control-row order)."""
    return grid if grid is not None else PersonaMatrix.from_predictions(df)


def _nanmean_cols(values: np.ndarray, cols: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values[:, cols], axis=1)


def persona_effects(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, grid: Optional[PersonaMatrix] = None) -> pd.DataFrame:
    """One row per persona: accuracy, paired delta to control with bootstrap CI, exact McNemar p, Holm, BH."""
    g = _matrix(df, grid)
    d = g.diff
    answered = ~np.isnan(d)
    n_q = answered.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.nansum(g.correct, axis=0) / n_q
        ctrl = (g.control[:, None] * answered).sum(axis=0) / n_q
    lo, hi = percentile_ci(boot_means(d, boot_weights(len(d), n_boot, seed)))
    better = (d > 0).sum(axis=0)
    worse = (d < 0).sum(axis=0)
    p = np.where(n_q > 0, mcnemar_p(better, worse), np.nan)
    holm, bh = holm_bh(p)
    out = g.personas.drop(columns="domain_role").copy()
    out["n_questions"] = n_q
    out["accuracy"] = acc
    out["control_accuracy"] = ctrl
    out["delta"] = acc - ctrl
    out["ci_low"], out["ci_high"] = lo, hi
    out["n_better"], out["n_worse"] = better, worse
    out["p"], out["p_holm"], out["q_bh"] = p, holm, bh
    out["significant"] = holm < ALPHA
    out["direction"] = np.where(out["significant"], np.where(out["delta"] > 0, "better", "worse"), "")
    return out


def _summary_rows(values: np.ndarray, w: np.ndarray) -> dict:
    """estimate, ci_low, ci_high, p for each column of a Q x m per-question difference matrix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        est = np.nanmean(values, axis=0)
    lo, hi = percentile_ci(boot_means(values, w))
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "p": ttest_p(values)}


def group_effects(df: pd.DataFrame, by: str, n_boot: int = 2000, seed: int = 0, grid: Optional[PersonaMatrix] = None) -> pd.DataFrame:
    """Per level of `by`: mean accuracy over the level's personas minus control on the same questions."""
    g = _matrix(df, grid)
    if by not in g.personas.columns:
        raise ValueError(f"cannot group by {by!r}; valid: {', '.join(GROUP_FACTORS)}")
    levels = sorted(g.personas[by].unique(), key=lambda v: (v == NONE, v))
    cols = [np.flatnonzero(g.personas[by].to_numpy() == lv) for lv in levels]
    acc = np.column_stack([_nanmean_cols(g.correct, c) for c in cols]) if cols else np.empty((len(g.control), 0))
    diff = acc - g.control[:, None]
    r = _summary_rows(diff, boot_weights(len(diff), n_boot, seed))
    ctrl = np.array([np.nanmean(np.where(np.isnan(a), np.nan, g.control)) if (~np.isnan(a)).any() else np.nan
                     for a in acc.T])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return pd.DataFrame({"factor": by, "level": levels, "n_personas": [len(c) for c in cols],
                             "n_questions": (~np.isnan(acc)).sum(axis=0), "accuracy": np.nanmean(acc, axis=0),
                             "control_accuracy": ctrl, "delta": r["estimate"], "ci_low": r["ci_low"],
                             "ci_high": r["ci_high"], "p": r["p"]})


def default_pairs(personas: pd.DataFrame) -> list[tuple[str, str, list, list]]:
    """(name, factor, levels A, levels B) of the contrasts users ask for, where both sides have personas."""
    pairs = [("persona - control", "persona", ["persona"], [CONTROL])]
    templates = list(dict.fromkeys(personas["template"]))
    if "speaker" in templates:  # the paper's first template first
        templates.remove("speaker")
        templates.insert(0, "speaker")
    pairs += [(f"template: {b} - {a}", "template", [b], [a]) for a, b in combinations(templates, 2)]
    levels = {f: set(personas[f]) for f in ATTRIBUTES}
    if {"interpersonal", "non-interpersonal"} <= levels["interpersonal"]:
        pairs.append(("interpersonal: interpersonal - non-interpersonal", "interpersonal",
                      ["interpersonal"], ["non-interpersonal"]))
    if "neutral" in levels["gender"] and levels["gender"] & {"female", "male"}:
        pairs.append(("gender: neutral - gendered", "gender", ["neutral"], ["female", "male"]))
    if {"female", "male"} <= levels["gender"]:
        pairs.append(("gender: female - male", "gender", ["female"], ["male"]))
    return pairs


def contrasts(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, pairs: Optional[Sequence] = None,
              grid: Optional[PersonaMatrix] = None) -> pd.DataFrame:
    """Differences between groups of personas on the same questions (control cancels), with CI and p.

    `pairs`: (name, factor, levels_a, levels_b); factor "persona" with levels ["persona"] vs ["control"] compares
    all personas with the control. Template contrasts use the roles present under both templates only.
    """
    g = _matrix(df, grid)
    pairs = default_pairs(g.personas) if pairs is None else list(pairs)
    rows, cols = [], []
    for name, factor, a, b in pairs:
        if factor == "persona":
            ka, kb = np.arange(len(g.personas)), np.array([], dtype=int)
        else:
            sel = g.personas
            if factor == "template":
                both = set(sel.loc[sel["template"].isin(a), "role"]) & set(sel.loc[sel["template"].isin(b), "role"])
                sel = sel[sel["role"].isin(both)]
            ka = sel.index[sel[factor].isin(a)].to_numpy()
            kb = sel.index[sel[factor].isin(b)].to_numpy()
        mean_a = _nanmean_cols(g.correct, ka) if len(ka) else np.full(len(g.control), np.nan)
        mean_b = _nanmean_cols(g.correct, kb) if len(kb) else (g.control if factor == "persona" else
                                                               np.full(len(g.control), np.nan))
        cols.append(mean_a - mean_b)
        rows.append({"contrast": name, "factor": factor, "level_a": "+".join(map(str, a)),
                     "level_b": "+".join(map(str, b)), "n_personas_a": len(ka), "n_personas_b": len(kb)})
    out = pd.DataFrame(rows, columns=["contrast", "factor", "level_a", "level_b", "n_personas_a", "n_personas_b"])
    if not rows:
        return out.assign(n_questions=[], estimate=[], ci_low=[], ci_high=[], p=[])
    diff = np.column_stack(cols)
    r = _summary_rows(diff, boot_weights(len(diff), n_boot, seed))
    out["n_questions"] = (~np.isnan(diff)).sum(axis=0)
    for k in ("estimate", "ci_low", "ci_high", "p"):
        out[k] = r[k]
    return out


def domain_match(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, grid: Optional[PersonaMatrix] = None) -> dict:
    """Roles with a domain: delta to control on in-domain questions minus delta on out-of-domain questions.

    Each (persona, question) pair weighs the same. The CI is a bootstrap over questions of the ratio estimators;
    p is from a normal approximation with a question-clustered linearised standard error.
    """
    g = _matrix(df, grid)
    dom = g.personas["domain_role"].to_numpy()
    nan = {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    out = {"n_roles": int(g.personas.loc[dom, "role"].nunique()), "n_pairs_in": 0, "n_pairs_out": 0,
           "in_domain": dict(nan), "out_of_domain": dict(nan), "difference": np.nan, "ci_low": np.nan,
           "ci_high": np.nan, "p": np.nan}
    if not dom.any():
        return out
    d = g.diff[:, dom]
    ok = ~np.isnan(d)
    inn = g.in_domain[:, dom] & ok
    outn = ~g.in_domain[:, dom] & ok
    s = np.column_stack([np.where(inn, d, 0).sum(1), inn.sum(1), np.where(outn, d, 0).sum(1), outn.sum(1)])
    tot = s.sum(0)
    out["n_pairs_in"], out["n_pairs_out"] = int(tot[1]), int(tot[3])
    if tot[1] == 0 or tot[3] == 0:
        return out
    b = np.asarray(boot_weights(len(s), n_boot, seed), dtype=float) @ s
    with np.errstate(invalid="ignore", divide="ignore"):
        b_in, b_out = b[:, 0] / b[:, 1], b[:, 2] / b[:, 3]
    th_in, th_out = tot[0] / tot[1], tot[2] / tot[3]
    n = len(s)
    z = (s[:, 0] - th_in * s[:, 1]) / (tot[1] / n) - (s[:, 2] - th_out * s[:, 3]) / (tot[3] / n)
    se = z.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
    diff = th_in - th_out
    lo, hi = percentile_ci(np.column_stack([b_in, b_out, b_in - b_out]))
    out["in_domain"] = {"estimate": th_in, "ci_low": lo[0], "ci_high": hi[0]}
    out["out_of_domain"] = {"estimate": th_out, "ci_low": lo[1], "ci_high": hi[1]}
    out.update(difference=diff, ci_low=lo[2], ci_high=hi[2],
               p=float(2 * stats.norm.sf(abs(diff) / se)) if se and se > 0 else (1.0 if diff == 0 else np.nan))
    return out


def randomness(df: pd.DataFrame, n_splits: int = 200, seed: int = 0, grid: Optional[PersonaMatrix] = None) -> dict:
    """How much of the persona differences is noise: per-question spread, and split-half stability of the best.

    Split halves: the questions are split at random into halves A and B n_splits times; the persona with the
    largest delta on A is looked up on B. With no real differences between personas its delta on B is, on
    average, that of the average persona (mean_delta_b_all), and it is above control on B about as often as
    a random persona is.
    """
    g = _matrix(df, grid)
    c = g.correct
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(c, axis=1)
        lo, hi = np.nanmin(c, axis=1), np.nanmax(c, axis=1)
    answered = ~np.isnan(c).all(axis=1)
    agree_ctrl = np.nanmax(np.abs(c - g.control[:, None]), axis=1) == 0 if c.shape[1] else np.zeros(len(c), bool)
    out = {"n_questions": int(answered.sum()), "n_personas": int(c.shape[1]),
           "mean_sd_across_personas": float(np.nanmean(sd)) if answered.any() else np.nan,
           "share_questions_personas_disagree": float(np.mean((hi > lo)[answered])) if answered.any() else np.nan,
           "share_questions_all_agree_with_control": float(np.mean(agree_ctrl[answered])) if answered.any() else np.nan,
           "share_questions_some_persona_flips_control": float(np.mean(~agree_ctrl[answered])) if answered.any() else np.nan,
           "n_splits": n_splits}
    d = g.diff[answered]
    nq, k = d.shape
    keys = ["share_best_above_control_on_b", "mean_delta_a_best", "mean_delta_b_best", "mean_delta_b_all",
            "share_same_best", "mean_spearman_halves"]
    if nq < 2 or k == 0:
        return {**out, **{key: np.nan for key in keys}}
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n_splits, nq)), axis=1)
    m = np.zeros((n_splits, nq), dtype=np.float32)
    np.put_along_axis(m, order[:, : nq // 2], 1.0, axis=1)
    a, b = boot_means(d, m), boot_means(d, 1 - m)  # n_splits x K means over each half
    best = np.argmax(np.where(np.isnan(a), -np.inf, a), axis=1)
    rows = np.arange(n_splits)
    rank_a, rank_b = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rho = [np.corrcoef(x, y)[0, 1] for x, y in zip(rank_a, rank_b)] if k > 2 else [np.nan]
        best_b = np.argmax(np.where(np.isnan(b), -np.inf, b), axis=1)
        out.update(share_best_above_control_on_b=float(np.mean(b[rows, best] > 0)),
                   mean_delta_a_best=float(np.nanmean(a[rows, best])), mean_delta_b_best=float(np.nanmean(b[rows, best])),
                   mean_delta_b_all=float(np.nanmean(b)), share_same_best=float(np.mean(best == best_b)),
                   mean_spearman_halves=float(np.nanmean(rho)))
    return out


def _role_scores(df: pd.DataFrame, on: str) -> pd.Series:
    pe = df if "delta" in df.columns and "accuracy" in df.columns else persona_effects(df, n_boot=1)
    return pe.groupby("role")["delta" if on == "delta" else "accuracy"].mean()


def rank_agreement(per_model: dict, on: str = "accuracy") -> pd.DataFrame:
    """Pairwise Spearman correlation of per-role accuracy (or delta; mean over templates) between models.

    per_model: model -> predictions (or its persona_effects table). CI: Fisher z with the Bonett-Wright
    variance (1 + r^2/2)/(n - 3); p from scipy.stats.spearmanr.
    """
    scores = {m: _role_scores(d, on) for m, d in per_model.items()}
    rows = []
    for a, b in combinations(scores, 2):
        common = scores[a].index.intersection(scores[b].index)
        n = len(common)
        r, p, lo, hi = (np.nan,) * 4
        if n >= 3:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r, p = stats.spearmanr(scores[a][common], scores[b][common])
            if n > 3 and np.isfinite(r) and abs(r) < 1:
                half = stats.norm.ppf(0.975) * np.sqrt((1 + r * r / 2) / (n - 3))
                lo, hi = np.tanh(np.arctanh(r) - half), np.tanh(np.arctanh(r) + half)
        rows.append({"model_a": a, "model_b": b, "on": on, "n_roles": n, "spearman": r, "ci_low": lo,
                     "ci_high": hi, "p": p})
    return pd.DataFrame(rows, columns=["model_a", "model_b", "on", "n_roles", "spearman", "ci_low", "ci_high", "p"])


def side_by_side(per_model: dict, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per model: control and mean persona accuracy, their difference with CI and p, the best persona
    (largest delta) with its CI and Holm p, and how many personas differ significantly after Holm.

    per_model: model -> predictions DataFrame, or model -> the dict `analyse` returned for it.
    """
    rows = []
    for model, obj in per_model.items():
        res = obj if isinstance(obj, dict) else None
        if res is None:
            g = PersonaMatrix.from_predictions(obj)
            res = {"persona_effects": persona_effects(obj, n_boot, seed, grid=g),
                   "contrasts": contrasts(obj, n_boot, seed, pairs=default_pairs(g.personas)[:1], grid=g),
                   "control_accuracy": float(np.mean(g.control)), "n_questions": len(g.control)}
        pe, ct = res["persona_effects"], res["contrasts"]
        pc = ct[ct["contrast"] == "persona - control"].iloc[0]
        best = pe.loc[pe["delta"].idxmax()] if len(pe) and pe["delta"].notna().any() else None
        rows.append({
            "model": model, "n_questions": res["n_questions"], "n_personas": len(pe),
            "control_accuracy": res["control_accuracy"], "persona_accuracy": float(pe["accuracy"].mean()),
            "delta": pc["estimate"], "ci_low": pc["ci_low"], "ci_high": pc["ci_high"], "p": pc["p"],
            "best_persona": f"{best['template']}: {best['role']}" if best is not None else None,
            "best_delta": best["delta"] if best is not None else np.nan,
            "best_ci_low": best["ci_low"] if best is not None else np.nan,
            "best_ci_high": best["ci_high"] if best is not None else np.nan,
            "best_p_holm": best["p_holm"] if best is not None else np.nan,
            "n_significant_better": int((pe["direction"] == "better").sum()),
            "n_significant_worse": int((pe["direction"] == "worse").sum()),
            "share_significant": float(pe["significant"].mean()) if len(pe) else np.nan,
        })
    return pd.DataFrame(rows)


def regression(df: pd.DataFrame, outcome: str = "correct", estimator: str = "within",
               grid: Optional[PersonaMatrix] = None) -> dict:
    """The factor regression (persona_bench/regression.py, where its specification is documented)."""
    from persona_bench.analysis.regression import factor_regression

    return factor_regression(df, outcome, estimator, grid)


def analyse(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, n_splits: int = 200,
            regression_estimator: str = "within", grid: Optional[PersonaMatrix] = None) -> dict:
    """Every analysis of one model's predictions (the same bootstrap seed throughout); `grid`: the matrix of
    df when the caller built it already (it is built once for the report's other views too)."""
    g = _matrix(df, grid)
    model = str(df["model"].iloc[0]) if "model" in df.columns and len(df) else None
    return {
        "model": model, "n_rows": int(len(df)), "n_questions": int(len(g.control)),
        "n_personas": int(len(g.personas)), "n_boot": n_boot, "seed": seed,
        "control_accuracy": float(np.mean(g.control)) if len(g.control) else np.nan,
        "persona_effects": persona_effects(df, n_boot, seed, grid=g),
        "groups": {by: group_effects(df, by, n_boot, seed, grid=g) for by in GROUP_FACTORS},
        "contrasts": contrasts(df, n_boot, seed, grid=g),
        "domain_match": domain_match(df, n_boot, seed, grid=g),
        "regression": regression(df, estimator=regression_estimator, grid=g),
        "randomness": randomness(df, n_splits, seed, grid=g),
    }


def to_records(obj, digits: int = 6):
    """JSON-ready copy: DataFrames -> list of dicts, floats rounded, NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, pd.DataFrame):
        return [to_records(r, digits) for r in obj.to_dict(orient="records")]
    if isinstance(obj, dict):
        return {str(k): to_records(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_records(v, digits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), digits) if np.isfinite(obj) else None
    if obj is None or obj is pd.NA:
        return None
    return obj if isinstance(obj, str) else str(obj)
