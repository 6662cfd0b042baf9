"""One model's predictions as a question x persona matrix, paired with the control on each question."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from persona_bench.outputs import CONTROL

NONE = "(none)"  # level label of a missing attribute (no domain, no category, ...)


ATTRIBUTES = ("role_category", "gender", "domain", "interpersonal")


GROUP_FACTORS = ("template",) + ATTRIBUTES


def _as_bool(s: pd.Series) -> pd.Series:
    """True/False/<NA> from bool, 0/1, 'true'/'false' strings or object dtype; anything else is missing."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean")

    def one(v):
        if isinstance(v, str):
            return {"true": True, "false": False, "1": True, "0": False}.get(v.strip().lower(), pd.NA)
        if isinstance(v, (bool, np.bool_, int, np.integer)) or (isinstance(v, (float, np.floating)) and not np.isnan(v)):
            return bool(v)
        return pd.NA
    lookup = {v: one(v) for v in s.dropna().unique()}  # few distinct values: map them once
    return s.map(lookup).astype("boolean")


def level_labels(s: pd.Series, factor: str) -> pd.Series:
    """The labels levels of `factor` carry in every table: strings; missing -> '(none)'; interpersonal named."""
    if factor == "interpersonal":
        b = _as_bool(s)
        return b.map({True: "interpersonal", False: "non-interpersonal"}).astype(object).fillna(NONE)
    return s.astype(object).where(s.notna(), NONE).map(str)


@dataclass
class Grid:
    """One model's predictions as a question x persona matrix, paired with the control on each question."""

    questions: np.ndarray  # question ids, Q
    subjects: np.ndarray  # Q
    control: np.ndarray  # Q, float 0/1
    correct: np.ndarray  # Q x K, float 0/1, NaN where a persona has no answer to the question
    in_domain: np.ndarray  # Q x K, bool (False where unknown)
    personas: pd.DataFrame  # K rows: template, role, attributes (labelled), domain_role (bool)

    @property
    def diff(self) -> np.ndarray:
        return self.correct - self.control[:, None]

    @property
    def complete(self) -> bool:
        return not np.isnan(self.correct).any()


def make_grid(df: pd.DataFrame, outcome: str = "correct") -> Grid:
    """Check the table and pivot it. ValueError on several models, no control rows, or duplicate rows."""
    need = {"question_id", "template", "role", outcome}
    missing = need - set(df.columns)
    if missing:
        raise ValueError(f"predictions lack column(s) {sorted(missing)}; the analysis needs {sorted(need)}")
    if "model" in df.columns and df["model"].nunique() > 1:
        raise ValueError(f"predictions hold {df['model'].nunique()} models ({', '.join(map(str, df['model'].unique()[:5]))}); "
                         "analyse one model at a time (df[df.model == name])")
    df = df.copy()
    for col in ATTRIBUTES:
        if col not in df.columns:
            df[col] = None
    if "subject" not in df.columns:
        df["subject"] = df["question_id"].astype(str).str.split("/").str[0]
    y = df[outcome].astype(float) if outcome != "correct" else _as_bool(df[outcome]).astype(float)
    is_control = df["template"].astype(str) == CONTROL
    if not is_control.any():
        raise ValueError("no control rows (template == 'control'): every delta is measured against the control "
                         "prompt on the same question; run with the control template included")
    ctrl = df[is_control]
    if ctrl["question_id"].duplicated().any():
        raise ValueError(f"{int(ctrl['question_id'].duplicated().sum())} questions have more than one control row; "
                         "expected exactly one per question (several models or runs mixed?)")
    persona_rows = df[~is_control]
    if persona_rows["role"].isna().any():
        raise ValueError(f"{int(persona_rows['role'].isna().sum())} non-control rows have no role")
    if persona_rows.duplicated(["question_id", "template", "role"]).any():
        raise ValueError("some (question, template, role) appear more than once; expected one row per prompt")
    questions = ctrl["question_id"].to_numpy()
    q_index = pd.Index(questions)
    persona_rows = persona_rows[persona_rows["question_id"].isin(q_index)]
    keys = persona_rows[["template", "role"]].astype(str)
    personas = (persona_rows.assign(template=keys["template"], role=keys["role"])
                .drop_duplicates(["template", "role"])[["template", "role", *ATTRIBUTES]]
                .sort_values(["template", "role"]).reset_index(drop=True))
    personas["domain_role"] = personas["domain"].notna().to_numpy()
    for col in ATTRIBUTES:
        personas[col] = level_labels(personas[col], col)
    k_index = pd.MultiIndex.from_frame(personas[["template", "role"]])
    qi = q_index.get_indexer(persona_rows["question_id"])
    ki = k_index.get_indexer(pd.MultiIndex.from_frame(keys))
    correct = np.full((len(questions), len(personas)), np.nan)
    correct[qi, ki] = y.loc[persona_rows.index].to_numpy()
    in_dom = np.zeros(correct.shape, dtype=bool)
    if "in_domain" in df.columns:
        in_dom[qi, ki] = _as_bool(persona_rows["in_domain"]).fillna(False).to_numpy(bool)
    in_dom &= personas["domain_role"].to_numpy()[None, :]
    return Grid(questions, ctrl["subject"].astype(str).to_numpy(), y.loc[ctrl.index].to_numpy(), correct, in_dom,
                personas)
