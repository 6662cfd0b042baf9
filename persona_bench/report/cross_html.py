"""The page's "Models side by side" section: the persona effects' distributions, the factors, audience versus
speaker per role, gendered pairs, subjects x templates and the models' agreement, each figure with the table
behind it (folded) and a small-sample badge where it rests on few questions."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from persona_bench.analysis.pairs import ALL_TEMPLATES
from persona_bench.report.tables import figure_html, table_html

FIGURES = {  # figure key in report.json -> alt text
    "persona_distributions": "persona effects per model",
    "factors_by_model": "factors across models",
    "audience_vs_speaker": "audience versus speaker per role",
    "gender_pairs": "gendered pairs",
    "subject_template": "subjects x templates",
}
GAP_ROWS = 5  # roles per model and direction in the audience-versus-speaker table


def _stack(per_model: dict, key: str) -> pd.DataFrame:
    """One model's table per model, stacked with a model column first."""
    frames = [a[key].assign(model=m) for m, a in per_model.items() if isinstance(a.get(key), pd.DataFrame)
              and len(a[key])]
    if not frames:
        return pd.DataFrame()
    t = pd.concat(frames, ignore_index=True)
    return t[["model", *[c for c in t.columns if c != "model"]]]


def _fold(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _gaps(pairs: pd.DataFrame) -> str:
    """Per model and template pair: how many roles do better as audience, and the largest gaps each way."""
    if not len(pairs):
        return ""
    counts, rows = [], []
    for (m, s, a), t in pairs.groupby(["model", "speaker_template", "audience_template"], sort=False):
        counts.append({"model": m, "templates": f"{s} / {a}", "roles": len(t),
                       "better as audience": int((t["difference"] > 0).sum()),
                       "interval above 0": int((t["ci_low"] > 0).sum()),
                       "interval below 0": int((t["ci_high"] < 0).sum()),
                       "mean gap (pts)": f"{100 * t['difference'].mean():+.1f}"})
        t = t.sort_values("difference")
        rows.append(pd.concat([t.tail(GAP_ROWS).iloc[::-1], t.head(GAP_ROWS)]))
    table = pd.concat(rows, ignore_index=True)
    return (table_html(pd.DataFrame(counts), n_col="")
            + _fold(f"the {GAP_ROWS} largest gaps each way, per model and template pair", table_html(table)))


def cross_model_html(result: dict, figs: dict[str, Path]) -> str:
    per_model = result["per_model"]
    cross = result["cross_model"]
    n = len(per_model)
    parts = ["<h2 id='cross'>Models side by side</h2>",
             f"<p class='note'>The {n} model(s) on the same axes, in accuracy points against each model's own "
             "control. The intervals below are 95% paired bootstrap intervals, descriptive and unadjusted for the "
             "number of levels, roles or pairs shown: conclude with each model's corrected tests above.</p>"]

    def fig(key: str, **kw) -> str:
        return figure_html(figs[key], FIGURES[key], **kw) if key in figs else ""

    parts += ["<h3 id='cross-distributions'>Persona effects per model</h3>",
              "<p>Every persona's difference to control, one violin per model: how wide the effects spread, whether "
              "they sit above or below 0, and which templates sit where.</p>", fig("persona_distributions")]
    groups = pd.concat([t.assign(model=m) for m, a in per_model.items() for f, t in a["groups"].items()
                        if f in ("template", "role_category", "gender") and len(t)] or [pd.DataFrame()],
                       ignore_index=True)
    parts += ["<h3 id='cross-factors'>Factors across models: template, role category, gender</h3>",
              "<p>Each level's personas against control (mean over the level's personas), every model in its own "
              "colour. Descriptive: one attribute is not adjusted for another (see each model's attribute "
              "effects).</p>", fig("factors_by_model")]
    if len(groups):
        cols = ["model", "factor", "level", "n_personas", "n_questions", "accuracy", "control_accuracy", "delta",
                "ci_low", "ci_high"]
        parts.append(_fold("the table", table_html(groups[[c for c in cols if c in groups]])))
    pairs = _stack(per_model, "template_pairs")
    if len(pairs):
        parts += ["<h3 id='cross-audience-speaker'>Audience versus speaker, per role</h3>",
                  "<p>Each role's difference to control as the speaker (\"You are a doctor.\") against the same role "
                  "as the audience (\"You are talking to a doctor.\"), on the same questions. Above the dashed line "
                  "the role does better as the audience; red: the role's audience-minus-speaker interval excludes 0 "
                  "(unadjusted). The largest gaps each way are named.</p>", fig("audience_vs_speaker"), _gaps(pairs)]
    gender = _stack(per_model, "gender_pairs")
    if len(gender):
        pooled = gender[gender["template"] == ALL_TEMPLATES]
        parts += ["<h3 id='cross-gender'>Gendered roles: female against male counterparts</h3>",
                  "<p>Pairs of roles that differ only in gender (mother / father, sister / brother, ...): the roles' "
                  "gender comes from the role catalogue (conf/role_set), the pairing from the word that differs. "
                  "Each pair's difference, female minus male role, on the same questions, averaged over the "
                  "templates.</p>", fig("gender_pairs"),
                  _fold("the table", table_html(pooled.drop(columns=["template", "female", "male"]))),
                  _fold("per template", table_html(gender[gender["template"] != ALL_TEMPLATES]))]
    subjects = _stack(per_model, "subject_template")
    if len(subjects):
        n_min = int(subjects.groupby("subject")["n_questions"].max().min())
        parts += ["<h3 id='cross-subjects'>Subjects x templates</h3>",
                  "<p>Each template's personas against control on one subject's questions (the number of questions "
                  "in brackets). Read the pattern across subjects, not a single cell: a subject holds few "
                  "questions, so each cell is noisy, and the cells of one row share the control's answers on "
                  "those questions, so a whole row moves together by the control's luck.</p>",
                  fig("subject_template", n=n_min, what="questions in the smallest subject"),
                  _fold("the table (with 95% t intervals)", table_html(subjects, n_col=""))]
    parts.append("<h3 id='cross-agreement'>Do the models agree on which roles help?</h3>")
    if "rank_agreement" in cross:
        parts.append("<p>Spearman correlation of per-role accuracy between models:</p>"
                     + table_html(cross["rank_agreement"], unit=None))
    if "role_model_heatmap" in figs:
        parts.append(figure_html(figs["role_model_heatmap"], "roles x models"))
    return "\n".join(p for p in parts if p)

