"""One model's predictions as a question x persona matrix, paired with the control on each question.

`PersonaMatrix.from_predictions(df)` is the one way the analysis turns a predictions table into matrices
(effects, regression and strategies all start from it). A persona is a (template, role) pair; personas are
sorted by (template, role).

Missing data: a persona "lacks" a question when it has no row for it, or a row whose outcome is missing.
`correct` (and `pred`) hold NaN there; `in_domain` holds False. The effects use the matrix as it is and
average over what each persona answered. `complete()` is the other policy: only the personas answered on
every question, the others named in `dropped` (the strategies use it: they compare personas question by
question).

Question order: `order="rows"` (the default) keeps the order of the control rows in the table;
`order="question_id"` sorts by question id, so the result does not depend on the table's row order. The
bootstraps and the random strategy draw questions by index with seeded generators, so the order is part of
every interval and p: effects and regression use "rows", strategies "question_id".

Split: the control row's `split` column; a question without one gets one from `hash_split`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from persona_bench.outputs import CONTROL

NONE = "(none)"  # level label of a missing attribute (no domain, no category, ...)

ATTRIBUTES = ("role_category", "gender", "domain", "interpersonal")

GROUP_FACTORS = ("template",) + ATTRIBUTES

ORDERS = ("rows", "question_id")  # question order: control-row order, or sorted by question id

SPLIT_SHARES = (0.6, 0.2)  # train, val; the rest is test


def hash_split(question_id: str) -> str:
    """train/val/test by a hash of the question id: sha256 -> first 8 hex digits / 16**8 in [0, 1): < 0.6
    train, < 0.8 val, else test (60/20/20, the same on every machine and run)."""
    u = int(hashlib.sha256(str(question_id).encode()).hexdigest()[:8], 16) / 16 ** 8
    return "train" if u < SPLIT_SHARES[0] else "val" if u < sum(SPLIT_SHARES) else "test"


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


@dataclass(frozen=True, eq=False)
class PersonaMatrix:
    """One model's predictions over Q questions x K personas, paired with the control on each question."""

    questions: np.ndarray  # Q question ids
    subjects: np.ndarray  # Q, str (the `subject` column, else the question id up to its first "/")
    answers: np.ndarray  # Q, the control rows' `answer` (NaN without the column)
    split: np.ndarray  # Q, "train"/"val"/"test" (the `split` column, else hash_split)
    split_from_hash: int  # questions whose `split` is missing (their split is hash_split's)
    control: np.ndarray  # Q, float: the control's outcome (0/1 for correct)
    control_pred: np.ndarray  # Q, float: the control's predicted option (NaN without a `pred` column)
    personas: pd.DataFrame  # K rows: template, role, attributes (labelled levels), domain_role (bool)
    correct: np.ndarray  # Q x K, float: the outcome (0/1 for correct), NaN where the persona lacks the question
    pred: np.ndarray  # Q x K, float: predicted option, NaN where missing
    in_domain: np.ndarray  # Q x K, bool: the `in_domain` column (False where unknown or missing; not masked by
    #   domain_role: effects and regression look at it only for personas with a domain role)
    dropped: tuple = ()  # "template/role" of personas `complete()` removed

    @classmethod
    def from_predictions(cls, df: pd.DataFrame, outcome: str = "correct", order: str = "rows") -> "PersonaMatrix":
        """Check the table and pivot it. ValueError on several models, no control rows, or duplicate rows.
        `outcome`: the column that fills `control` and `correct`; `order`: see ORDERS."""
        if order not in ORDERS:
            raise ValueError(f"order={order!r}; valid: {', '.join(ORDERS)}")
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
        if order == "question_id":
            ctrl = ctrl.iloc[np.argsort(ctrl["question_id"].to_numpy(), kind="stable")]
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
        shape = (len(questions), len(personas))
        correct = np.full(shape, np.nan)
        correct[qi, ki] = y.loc[persona_rows.index].to_numpy()
        pred = np.full(shape, np.nan)
        has_pred = "pred" in df.columns
        if has_pred:
            pred_values = pd.to_numeric(df["pred"], errors="coerce").astype(float)
            pred[qi, ki] = pred_values.loc[persona_rows.index].to_numpy()
        in_dom = np.zeros(shape, dtype=bool)
        if "in_domain" in df.columns:
            in_dom[qi, ki] = _as_bool(persona_rows["in_domain"]).fillna(False).to_numpy(bool)
        split = ctrl["split"] if "split" in ctrl.columns else pd.Series(None, index=ctrl.index, dtype=object)
        return cls(
            questions=questions,
            subjects=ctrl["subject"].astype(str).to_numpy(),
            answers=ctrl["answer"].to_numpy() if "answer" in ctrl.columns else np.full(len(ctrl), np.nan),
            split=np.array([s if isinstance(s, str) and s else hash_split(q) for q, s in zip(questions, split)]),
            split_from_hash=int(split.isna().sum()),
            control=y.loc[ctrl.index].to_numpy(),
            control_pred=pred_values.loc[ctrl.index].to_numpy() if has_pred else np.full(len(ctrl), np.nan),
            personas=personas, correct=correct, pred=pred, in_domain=in_dom)

    # ------------------------------------------------------------------------------------------ views

    @property
    def diff(self) -> np.ndarray:
        """Q x K persona outcome minus the control's on the same question (NaN where missing)."""
        return self.correct - self.control[:, None]

    @property
    def keys(self) -> list[tuple[str, str]]:
        """(template, role) of each persona, in column order."""
        return list(zip(self.personas["template"], self.personas["role"]))

    @property
    def names(self) -> list[str]:
        """"template/role" of each persona, in column order."""
        return [f"{t}/{r}" for t, r in self.keys]

    @property
    def is_complete(self) -> bool:
        """Every persona answered every question."""
        return not np.isnan(self.correct).any()

    def mask(self, split: str) -> np.ndarray:
        """Q bool: the questions of one split ("train", "val" or "test")."""
        return self.split == split

    def complete(self) -> "PersonaMatrix":
        """The matrix restricted to the personas answered on every question; the others are added to `dropped`
        (in column order). Questions, their order and the control are unchanged."""
        keep = ~np.isnan(self.correct).any(axis=0)
        if keep.all():
            return self
        gone = tuple(n for n, k in zip(self.names, keep) if not k)
        return replace(self, personas=self.personas[keep].reset_index(drop=True), correct=self.correct[:, keep],
                       pred=self.pred[:, keep], in_domain=self.in_domain[:, keep], dropped=self.dropped + gone)
