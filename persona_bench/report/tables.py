"""How a table (and a figure) reads in report.html: human headers, one unit (accuracy in %, differences in accuracy points),
intervals in one column, p-values to three decimals, and a small-sample badge where a table rests on few
questions. report.json keeps the raw columns and fractions; this is the page's view of them only.

    table_html(df)                       # differences in points (the default)
    table_html(df, unit=None)            # correlations, agreement shares: plain numbers
    table_html(df, n_col="n_test", what="test questions")   # badge when any row rests on < FEW_QUESTIONS
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

FEW_QUESTIONS = 100  # below this many questions a table or figure carries the small-sample badge
WIDE = 13  # a table with more columns than this and at most TALL rows is shown transposed (a column per row)
TALL = 4

# Column -> header. A column not listed reads with its underscores as spaces.
LABELS = {
    "model": "model", "template": "template", "role": "role", "role_category": "role category",
    "gender": "gender", "domain": "expertise domain", "interpersonal": "interpersonal", "subject": "subject",
    "n_questions": "questions", "n_personas": "personas", "n_roles": "roles", "n_test": "test questions",
    "n_tests": "tests", "n": "n", "n_prompts": "prompts", "n_obs": "observations", "n_splits": "halvings",
    "accuracy": "accuracy", "control_accuracy": "control accuracy", "persona_accuracy": "persona accuracy (mean)",
    "delta": "difference to control", "estimate": "estimate", "se": "standard error", "mde": "minimum detectable",
    "n_better": "questions better", "n_worse": "questions worse", "p": "p (raw)", "p_adj": "p (corrected)",
    "p_holm": "p (Holm)", "q_bh": "q (Benjamini-Hochberg)", "significant": "significant",
    "p_equiv": "p equivalence (raw)", "p_equiv_adj": "p equivalence (corrected)", "equivalent": "equivalent",
    "verdict": "verdict", "direction": "direction", "family": "family of tests", "level": "level",
    "factor": "factor", "contrast": "contrast", "level_a": "level A", "level_b": "level B",
    "n_personas_a": "personas A", "n_personas_b": "personas B", "reference": "reference level", "term": "term",
    "df": "degrees of freedom", "strategy": "strategy", "interval": "interval", "test": "test",
    "spread": "spread (SD)", "detail": "detail", "shrunken": "shrunken difference",
    "deviation": "deviation from persona mean", "deviation_se": "deviation standard error",
    "prior_outlier": "prior outlier", "rank": "rank", "n_could_be_best": "personas that could be best",
    "persona": "best persona", "best_p_holm": "best: p (Holm)", "share_significant": "personas significant",
    "n_significant_better": "significantly better", "n_significant_worse": "significantly worse",
    "label": "answer", "predicted": "predicted", "predicted_share": "share predicted",
    "correct_answer": "correct answers", "correct_share": "share correct", "measure": "measure",
    "pearson_r": "Pearson r", "spearman_rho": "Spearman rho", "spearman_p": "Spearman p (raw)",
    "spearman_p_adj": "Spearman p (corrected)", "model_a": "model A", "model_b": "model B", "on": "compared on",
    "spearman": "Spearman rho", "pearson": "Pearson r", "pearson_p": "Pearson p", "name": "family",
    "what": "what it tests", "method": "method", "method_name": "correction", "alpha": "alpha",
    "n_significant": "significant", "n_equivalent": "equivalent", "correction": "correction", "tables": "tables",
    "vif": "VIF", "gvif": "GVIF", "main_category": "main category", "warning": "warning",
    "config_id": "config id", "path": "folder", "revision": "revision", "weights_sha256": "weights sha256",
    "dtype": "dtype", "quantization": "quantization", "device": "device", "dataset": "dataset",
    "data_hash": "data hash", "scoring": "scoring", "transformers": "transformers",
    "speaker_template": "speaker template", "audience_template": "audience template",
    "speaker_delta": "as speaker", "audience_delta": "as audience", "difference": "difference",
    "female": "female role", "male": "male role", "pair": "pair", "female_delta": "female role",
    "male_delta": "male role", "n_unparsed": "unparsed", "failure_rate": "failure rate",
    "parse_rule": "parser rule", "delta_logit": "difference, logits", "delta_generate": "difference, generated",
}
# Columns in accuracy points when the table's unit is "points" (their headers get " (pts)").
POINTS = {"delta", "estimate", "se", "mde", "shrunken", "deviation", "deviation_se", "difference", "spread",
          "speaker_delta", "audience_delta", "female_delta", "male_delta", "delta_logit", "delta_generate",
          "ci_low", "ci_high", "sim_ci_low", "sim_ci_high"}
SIGNED = POINTS - {"se", "mde", "deviation_se", "spread"}  # shown with their sign
PERCENT = {"accuracy", "control_accuracy", "persona_accuracy", "predicted_share", "correct_share",
           "share_significant", "failure_rate"}  # shares, shown in %
PVALUES = {"p", "p_adj", "p_holm", "q_bh", "p_equiv", "p_equiv_adj", "spearman_p", "spearman_p_adj",
           "best_p_holm", "pearson_p"}
INTERVALS = [("ci_low", "ci_high", "95% CI"), ("sim_ci_low", "sim_ci_high", "simultaneous 95% CI"),
             ("rank_ci_low", "rank_ci_high", "rank 95% CI")]


def header(col: str, unit: Optional[str] = "points") -> str:
    """The human header of a column ('difference to control (pts)', 'control accuracy (%)')."""
    name = LABELS.get(col, str(col).replace("_", " "))
    if unit == "points" and col in POINTS:
        return f"{name} (pts)"
    if col in PERCENT:
        return f"{name} (%)"
    return name


def _missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, (float, np.floating)) and not np.isfinite(x))


def cell(col: str, x, unit: Optional[str] = "points") -> str:
    """One value as the page shows it: points with one decimal, % with one, p to three decimals."""
    if _missing(x):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if unit == "points" and col in POINTS:
            return f"{100 * x:+.1f}" if col in SIGNED else f"{100 * x:.1f}"
        if col in PERCENT:
            return f"{100 * x:.1f}"
        if col in PVALUES:
            return "<0.001" if x < 0.001 else f"{x:.3f}"
        if col == "df":
            return f"{x:.1f}"
        if x.is_integer() and abs(x) < 1e15:
            return f"{int(x):,}"
        return f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}" if abs(x) < 1000 else f"{x:,.0f}"
    return _breakable(str(x))


def _breakable(text: str, every: int = 20) -> str:
    """Long unspaced text (folders, hashes) with zero-width break opportunities, so a table can wrap it."""
    if len(text) <= every or " " in text:
        return text
    out, run = [], 0
    for ch in text:
        out.append(ch)
        run += 1
        if ch in "/_-" or run >= every:
            out.append("\u200b")
            run = 0
    return "".join(out)


def readable(df: pd.DataFrame, unit: Optional[str] = "points") -> pd.DataFrame:
    """The table as strings under human headers; each (low, high) pair joined into one interval column."""
    out = {}
    cols = list(df.columns)
    joined = {lo: (hi, name) for lo, hi, name in INTERVALS if lo in cols and hi in cols}
    skip = {hi for hi, _ in joined.values()}
    for c in cols:
        if c in skip:
            continue
        if c in joined:
            hi, name = joined[c]
            suffix = " (pts)" if unit == "points" and c in POINTS else ""
            out[name + suffix] = [f"[{cell(c, a, unit)},\u00a0{cell(hi, b, unit)}]" if not (_missing(a) and _missing(b))
                                  else "" for a, b in zip(df[c], df[hi])]
        else:
            out[header(c, unit)] = [cell(c, v, unit) for v in df[c]]
    return pd.DataFrame(out)


def few_questions_badge(n, what: str = "questions") -> str:
    """The small-sample badge: a table or figure resting on fewer than FEW_QUESTIONS questions."""
    return (f"<p class='badge'><b>Small sample:</b> {n:,} {html.escape(what)} (fewer than {FEW_QUESTIONS}): the "
            "intervals are wide and a difference of a few points is within chance; read it as indicative.</p>")


def table_html(df, unit: Optional[str] = "points", max_rows: Optional[int] = None, n_col: Optional[str] = None,
               what: str = "questions", transpose: Optional[bool] = None) -> str:
    """A DataFrame as an HTML table that reads (readable), in a box that scrolls sideways if it must; with
    the small-sample badge when `n_col` (default: n_questions or n_test, if present) is below FEW_QUESTIONS in
    any row. Wide tables of few rows are shown transposed (one column per row) unless transpose=False."""
    if df is None or (isinstance(df, pd.DataFrame) and df.empty):
        return '<p class="note">(nothing to show)</p>'
    t = df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)
    if max_rows is not None and len(t) > max_rows:
        t = t.head(max_rows)
    badge = ""
    if n_col is None:  # "" for no badge
        n_col = next((c for c in ("n_test", "n_questions") if c in t), None)
    if n_col and n_col in t:
        n = pd.to_numeric(t[n_col], errors="coerce")
        if n.notna().any() and n.min() < FEW_QUESTIONS:
            badge = few_questions_badge(int(n.min()), "test questions" if n_col == "n_test" else what)
    renamed = {}
    if "family" in t and t["family"].nunique(dropna=False) == 1 and "p_adj" in t:  # one family: say it once
        family = str(t["family"].iloc[0]).replace("_", " ")
        t = t.drop(columns="family")
        renamed = {header("p_adj", unit): f"p (corrected in the {family} family)"}
    shown = readable(t, unit).rename(columns=renamed)
    if transpose if transpose is not None else (shown.shape[1] > WIDE and len(shown) <= TALL):
        first = shown.columns[0]
        shown = shown.set_index(first).T.reset_index().rename(columns={"index": first})
    return badge + "<div class='scroll'>" + _render(shown) + "</div>"


def _is_number(v: str) -> bool:
    parts = v[1:-1].split(",\u00a0") if v.startswith("[") and v.endswith("]") else [v.replace(",", "")]
    try:
        for part in parts:
            float(part.lstrip("<").rstrip("%"))
    except ValueError:
        return False
    return True


def _numeric(values) -> bool:
    """A column of numbers, intervals or blanks (right-aligned)."""
    shown = [str(v) for v in values if str(v)]
    return bool(shown) and all(_is_number(v) for v in shown)


def _render(t: pd.DataFrame) -> str:
    """The table's HTML: text columns left-aligned, numbers right-aligned (class 'num')."""
    e = html.escape
    num = [_numeric(t[c]) for c in t.columns]
    head = "".join(f"<th{' class=num' if n else ''}>{e(str(c))}</th>" for c, n in zip(t.columns, num))
    rows = "".join("<tr>" + "".join(f"<td{' class=num' if n else ''}>{e(str(v))}</td>" for v, n in zip(r, num))
                   + "</tr>" for r in t.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def figure_html(path: Path, alt: str, n: Optional[int] = None, what: str = "questions") -> str:
    """A PNG embedded in the page, with the small-sample badge above it when `n` < FEW_QUESTIONS."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    badge = few_questions_badge(n, what) if n is not None and n < FEW_QUESTIONS else ""
    return f'{badge}<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'
