"""Accuracy summaries from a predictions table (pure pandas; no model, no Hydra).

Persona accuracies weight every (template, role) persona equally: each is scored on
the same questions, so this is also the mean over persona rows.
"""

from __future__ import annotations

import logging
from collections import Counter

import pandas as pd

from .data import LETTERS

log = logging.getLogger(__name__)

CONTROL = "control"


def _acc(df: pd.DataFrame, by: str) -> dict:
    return {str(k): round(float(v), 6) for k, v in df.groupby(by, dropna=True)["correct"].mean().items()}


def _minus(acc: dict, control: float) -> dict:
    return {k: round(v - control, 6) for k, v in acc.items()}


def label_histogram(df: pd.DataFrame) -> dict[str, int]:
    """How often each answer position was predicted (A/B/C/D by position, whatever the label style)."""
    counts = Counter(int(p) for p in df["pred"])
    n = max(counts) + 1 if counts else 0
    return {LETTERS[i]: counts.get(i, 0) for i in range(max(n, int(df["n_choices"].max()) if len(df) else 0))}


def collapse_share(hist: dict[str, int]) -> tuple[str, float]:
    total = sum(hist.values())
    if not total:
        return "", 0.0
    label = max(hist, key=hist.get)
    return label, hist[label] / total


def accuracy_summary(df: pd.DataFrame, collapse_warning: float = 0.6) -> dict:
    """Control, persona mean, per template/role/category/gender accuracy, deltas to control, label histogram."""
    control = df[df["template"] == CONTROL]
    persona = df[df["template"] != CONTROL]
    acc_control = float(control["correct"].mean()) if len(control) else float("nan")
    acc_persona = float(persona["correct"].mean()) if len(persona) else float("nan")
    by_role = _acc(persona, "role")
    by = {group: _acc(persona, column) for group, column in
          (("template", "template"), ("role_category", "role_category"), ("gender", "gender"))}
    out = {
        "n_prompts": int(len(df)),
        "n_questions": int(df["question_id"].nunique()),
        "n_roles": int(persona["role"].nunique()),
        "accuracy": {
            "control": round(acc_control, 6),
            "persona_mean": round(acc_persona, 6),
            "template": _acc(df, "template"),
            "role": by_role,
            "category": by["role_category"],
            "gender": by["gender"],
            "subject_control": _acc(control, "subject"),
        },
        "delta_vs_control": {
            "persona_mean": round(acc_persona - acc_control, 6),
            "template": _minus(by["template"], acc_control),
            "role": _minus(by_role, acc_control),
            "category": _minus(by["role_category"], acc_control),
            "gender": _minus(by["gender"], acc_control),
        },
    }
    if by_role:
        best = max(by_role, key=by_role.get)
        out["best_role"] = {"role": best, "accuracy": by_role[best], "delta_vs_control": round(by_role[best] - acc_control, 6)}
    hist = label_histogram(df)
    label, share = collapse_share(hist)
    out["pred_histogram"] = hist
    out["pred_top_share"] = round(share, 4)
    if share > collapse_warning:
        log.warning(
            "answer %s takes %.0f%% of all predictions (over %.0f%%): the scorer may be collapsed, and accuracy then "
            "measures the share of %s answers, not knowledge; try scoring=cloze", label, 100 * share, 100 * collapse_warning, label,
        )
    return out
