"""Logit scoring against generation: do the two ways of reading a model's answer pick the same option,
and do the persona effects keep their sign? (pure pandas/scipy, from saved results)

Pairs of (logit-scored, generated) answers to the same prompts, found by `find_pairs`:

  same prompts                        within a generate run: `logit_pred` (the argmax of the answer labels'
                                      logits at the first generated position, what letter scoring would say)
                                      against the generated answer `pred`, prompt by prompt; rows whose
                                      labels are not single tokens (logit_pred -1) are left out
  separate runs: generate vs <method> two labels of one model in the same report (see results.load_runs),
                                      one generated, one scored by letter or cloze logits; rows matched on
                                      (question_id, template, role)

`compare_pair` gives, per pair, one summary row (PAIR_COLUMNS) and one row per persona (template, role,
delta_logit, delta_generate, sign): a persona's delta is its accuracy minus the control's on the same
matched questions, under each way of answering. Unparsed generated answers count as wrong (as in the
paper) and as disagreeing with the logits; `agreement_parsed` leaves them out.

Summary columns: pair, kind, model, logit_label, generate_label, logit_scoring, n_prompts, n_questions,
n_parsed, logit_control_accuracy, logit_persona_accuracy, generate_control_accuracy,
generate_persona_accuracy (persona means are over persona prompts), agreement (share of prompts with the
same option), agreement_parsed (over parsed generated answers), question_agreement_mean / _median
(per question, the share of its prompts, control and personas, where both agree), share_questions_full_agreement,
n_personas, n_same_sign, n_opposite_sign, n_zero (a delta of exactly 0 under either), share_same_sign
(n_same_sign over the personas with a nonzero delta under both), spearman, spearman_p, pearson, pearson_p
(between the two delta vectors, over all n_personas), and the noise baseline (`split_half`): n_splits,
split_half_spearman_logit / _generate (the same method's persona deltas on two random halves of the questions),
split_half_spearman_cross (logits on one half against generation on the other), and split_half_same_sign_logit /
_generate / _cross (the share of personas, nonzero on both halves, whose deltas keep their sign): means over
n_splits random halvings.

Why a baseline: logits and generation read the same prompt, so a persona's two deltas share that prompt's luck
on every question; with no persona effect at all their agreement over all questions can look high. Disjoint
halves share no question: with no persona effect every split-half rank correlation is about 0, and the sign
shares are 1/2 on average over data sets (in one data set, a chance difference between all personas and the
control moves both halves' signs together, as it moves the two methods' signs over all questions). With real
effects the within-method values say how reproducible the deltas are at half the questions (no Spearman-Brown
step-up: the values are for half-size samples and read as lower bounds for the full one). Cross-method agreement
above split_half_spearman_cross is shared per-prompt noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from persona_bench.analysis.stats import boot_means
from persona_bench.outputs import CONTROL, KEY

SAME_PROMPTS = "same prompts"
LOGIT_METHODS = ("letter", "cloze")
GENERATE = "generate"
PAIR_COLUMNS = ["pair", "kind", "model", "logit_label", "generate_label", "logit_scoring", "n_prompts", "n_questions",
                "n_parsed", "logit_control_accuracy", "logit_persona_accuracy", "generate_control_accuracy",
                "generate_persona_accuracy", "agreement", "agreement_parsed", "question_agreement_mean",
                "question_agreement_median", "share_questions_full_agreement", "n_personas", "n_same_sign",
                "n_opposite_sign", "n_zero", "share_same_sign", "spearman", "spearman_p", "pearson", "pearson_p",
                "n_splits", "split_half_spearman_logit", "split_half_spearman_generate", "split_half_spearman_cross",
                "split_half_same_sign_logit", "split_half_same_sign_generate", "split_half_same_sign_cross"]
PERSONA_COLUMNS = ["pair", "template", "role", "n_questions", "delta_logit", "delta_generate", "sign"]
TOL = 1e-12  # a delta within this of 0 is 0
N_SPLITS = 50  # random halvings of the questions for the noise baseline


@dataclass
class Pair:
    """Two readings of one model's answers on matched prompts. `frame`: question_id, template, role,
    answer, pred_logit, pred_generate, parsed (one row per matched prompt)."""
    name: str
    kind: str
    model: str
    logit_label: str
    generate_label: str
    logit_scoring: str
    frame: pd.DataFrame


def scoring_method(results, label: str) -> Optional[str]:
    """The label's scoring method, from its runs' summary.json (else its `scoring` column)."""
    runs = results.runs.get(label) or []
    method = ((runs[0].summary.get("scoring") or {}).get("method")) if runs else None
    df = results.predictions[label]
    if method is None and "scoring" in df and len(df):
        method = str(df["scoring"].iloc[0])
    return method


def _keys(df: pd.DataFrame) -> pd.DataFrame:
    return df[KEY].assign(role=df["role"].astype(object).where(df["role"].notna(), ""))


def same_prompts(df: pd.DataFrame) -> Optional[pd.DataFrame]:
    """A generate run's own letter-logit answers against its generated ones; None without logit_pred."""
    if "logit_pred" not in df or "parsed" not in df:
        return None
    lp = df["logit_pred"].fillna(-1).astype(int)
    ok = (lp >= 0).to_numpy()
    if not ok.any():
        return None
    return _keys(df[ok]).assign(answer=df.loc[ok, "answer"].to_numpy(), pred_logit=lp[ok].to_numpy(),
                                pred_generate=df.loc[ok, "pred"].to_numpy(),
                                parsed=df.loc[ok, "parsed"].astype(bool).to_numpy()).reset_index(drop=True)


def separate_runs(logit: pd.DataFrame, gen: pd.DataFrame) -> pd.DataFrame:
    """A logit-scored run and a generate run of one model, matched on (question_id, template, role)."""
    a = _keys(logit).assign(pred_logit=logit["pred"].to_numpy())
    b = _keys(gen).assign(answer=gen["answer"].to_numpy(), pred_generate=gen["pred"].to_numpy(),
                          parsed=gen["parsed"].astype(bool).to_numpy() if "parsed" in gen else gen["pred"].to_numpy() >= 0)
    return b.merge(a, on=KEY, how="inner")[KEY + ["answer", "pred_logit", "pred_generate", "parsed"]]


def find_pairs(results) -> list[Pair]:
    """Every (logit, generation) pair among the report's runs (see the module doc), in label order."""
    methods = {label: scoring_method(results, label) for label in results.predictions}
    model_of = {label: (results.runs[label][0].model if results.runs.get(label) else label) for label in methods}
    out = []
    for gen, method in methods.items():
        if method != GENERATE:
            continue
        df = results.predictions[gen]
        frame = same_prompts(df)
        if frame is not None:
            out.append(Pair(f"{gen}: {SAME_PROMPTS}", SAME_PROMPTS, model_of[gen], gen, gen, "letter", frame))
        for other, m in methods.items():
            if m in LOGIT_METHODS and model_of[other] == model_of[gen]:
                frame = separate_runs(results.predictions[other], df)
                if len(frame):
                    out.append(Pair(f"{gen} vs {other}", f"separate runs: generate vs {m}", model_of[gen], other,
                                    gen, m, frame))
    return out


def persona_deltas(frame: pd.DataFrame, pred: str) -> pd.DataFrame:
    """Per (template, role): n_questions and accuracy minus the control's on the same questions, by `pred`."""
    correct = (frame[pred] == frame["answer"]).astype(float)
    is_ctrl = (frame["template"] == CONTROL).to_numpy()
    ctrl = pd.Series(correct[is_ctrl].to_numpy(), index=frame.loc[is_ctrl, "question_id"].to_numpy())
    ctrl = ctrl[~ctrl.index.duplicated()]
    p = frame[~is_ctrl]
    base = p["question_id"].map(ctrl)
    ok = base.notna()
    diff = (correct[~is_ctrl][ok] - base[ok]).rename("delta")
    g = diff.groupby([p.loc[ok, "template"], p.loc[ok, "role"]])
    return pd.DataFrame({"n_questions": g.size(), "delta": g.mean()}).reset_index()


def _corr(fn, x, y) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r, p = fn(x, y)
    return float(r), float(p)


def _delta_matrices(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Questions x personas differences to control (NaN where a prompt is missing), under the logits and under
    generation."""
    is_ctrl = (frame["template"] == CONTROL).to_numpy()
    qi, _ = pd.factorize(frame["question_id"])
    ki, keys = pd.factorize(pd.MultiIndex.from_frame(frame[["template", "role"]].astype(str)))
    persona = np.unique(ki[~is_ctrl])
    col = np.full(len(keys), -1)
    col[persona] = np.arange(len(persona))
    out = []
    for pred in ("pred_logit", "pred_generate"):
        right = (frame[pred] == frame["answer"]).to_numpy(float)
        ctrl = np.full(qi.max() + 1 if len(qi) else 0, np.nan)
        ctrl[qi[is_ctrl]] = right[is_ctrl]
        m = np.full((len(ctrl), len(persona)), np.nan)
        m[qi[~is_ctrl], col[ki[~is_ctrl]]] = right[~is_ctrl]
        out.append(m - ctrl[:, None])
    return out[0], out[1]


def _row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair over the columns finite in both (NaN with fewer than 3)."""
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a, b)):
        ok = np.isfinite(x) & np.isfinite(y)
        out[i] = _corr(stats.spearmanr, x[ok], y[ok])[0]
    return out


def _row_same_sign(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row pair, the share of columns nonzero in both whose signs agree."""
    nz = (np.abs(a) > TOL) & (np.abs(b) > TOL)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nz.any(axis=1), ((np.sign(a) == np.sign(b)) & nz).sum(axis=1) / nz.sum(axis=1), np.nan)


def split_half(frame: pd.DataFrame, n_splits: int = N_SPLITS, seed: int = 0) -> dict:
    """The noise baseline of the module doc: persona deltas on random halves of the questions, compared within
    each method and across methods, averaged over n_splits halvings."""
    dl, dg = _delta_matrices(frame)
    keys = ["split_half_spearman_logit", "split_half_spearman_generate", "split_half_spearman_cross",
            "split_half_same_sign_logit", "split_half_same_sign_generate", "split_half_same_sign_cross"]
    nq = len(dl)
    if nq < 2 or not dl.shape[1]:
        return {"n_splits": 0, **{k: np.nan for k in keys}}
    order = np.argsort(np.random.default_rng(seed).random((n_splits, nq)), axis=1)
    half = np.zeros((n_splits, nq), dtype=np.float32)
    np.put_along_axis(half, order[:, : nq // 2], 1.0, axis=1)
    la, lb, ga, gb = boot_means(dl, half), boot_means(dl, 1 - half), boot_means(dg, half), boot_means(dg, 1 - half)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vals = [np.nanmean(_row_spearman(la, lb)), np.nanmean(_row_spearman(ga, gb)),
                np.nanmean(np.concatenate([_row_spearman(la, gb), _row_spearman(ga, lb)])),
                np.nanmean(_row_same_sign(la, lb)), np.nanmean(_row_same_sign(ga, gb)),
                np.nanmean(np.concatenate([_row_same_sign(la, gb), _row_same_sign(ga, lb)]))]
    return {"n_splits": n_splits, **{k: float(v) for k, v in zip(keys, vals)}}


def compare_pair(pair: Pair) -> tuple[dict, pd.DataFrame]:
    """The summary row and the per-persona deltas of one pair (see the module doc)."""
    f = pair.frame
    is_ctrl = (f["template"] == CONTROL).to_numpy()
    right_l = (f["pred_logit"] == f["answer"]).to_numpy()
    right_g = (f["pred_generate"] == f["answer"]).to_numpy()
    same = (f["pred_logit"] == f["pred_generate"]).to_numpy()
    parsed = f["parsed"].to_numpy(bool)
    per_q = pd.Series(same, dtype=float).groupby(f["question_id"].to_numpy()).mean()

    def mean(x) -> float:
        return float(np.mean(x)) if len(x) else np.nan

    dl = persona_deltas(f, "pred_logit").rename(columns={"delta": "delta_logit"})
    dg = persona_deltas(f, "pred_generate")[["template", "role", "delta"]].rename(columns={"delta": "delta_generate"})
    d = dl.merge(dg, on=["template", "role"], how="inner")
    sl = np.where(np.abs(d["delta_logit"]) <= TOL, 0, np.sign(d["delta_logit"]))
    sg = np.where(np.abs(d["delta_generate"]) <= TOL, 0, np.sign(d["delta_generate"]))
    d["sign"] = np.where((sl == 0) | (sg == 0), "zero", np.where(sl == sg, "same", "opposite"))
    d.insert(0, "pair", pair.name)
    n_same, n_opp = int((d["sign"] == "same").sum()), int((d["sign"] == "opposite").sum())
    x, y = d["delta_logit"].to_numpy(float), d["delta_generate"].to_numpy(float)
    rho, rho_p = _corr(stats.spearmanr, x, y)
    r, r_p = _corr(stats.pearsonr, x, y)
    row = {"pair": pair.name, "kind": pair.kind, "model": pair.model, "logit_label": pair.logit_label,
           "generate_label": pair.generate_label, "logit_scoring": pair.logit_scoring, "n_prompts": int(len(f)),
           "n_questions": int(f["question_id"].nunique()), "n_parsed": int(parsed.sum()),
           "logit_control_accuracy": mean(right_l[is_ctrl]), "logit_persona_accuracy": mean(right_l[~is_ctrl]),
           "generate_control_accuracy": mean(right_g[is_ctrl]), "generate_persona_accuracy": mean(right_g[~is_ctrl]),
           "agreement": mean(same), "agreement_parsed": mean(same[parsed]),
           "question_agreement_mean": float(per_q.mean()) if len(per_q) else np.nan,
           "question_agreement_median": float(per_q.median()) if len(per_q) else np.nan,
           "share_questions_full_agreement": float((per_q == 1).mean()) if len(per_q) else np.nan,
           "n_personas": int(len(d)), "n_same_sign": n_same, "n_opposite_sign": n_opp,
           "n_zero": int((d["sign"] == "zero").sum()),
           "share_same_sign": n_same / (n_same + n_opp) if n_same + n_opp else np.nan,
           "spearman": rho, "spearman_p": rho_p, "pearson": r, "pearson_p": r_p, **split_half(f)}
    return row, d[PERSONA_COLUMNS].reset_index(drop=True)


def logit_vs_generation(results) -> Optional[tuple[pd.DataFrame, pd.DataFrame]]:
    """(one row per pair, one row per pair x persona) for every pair in `results`; None when there is none."""
    pairs = find_pairs(results)
    if not pairs:
        return None
    done = [compare_pair(p) for p in pairs]
    return (pd.DataFrame([r for r, _ in done], columns=PAIR_COLUMNS),
            pd.concat([d for _, d in done], ignore_index=True))
