"""What the report may claim, as HTML: the declared families of tests with their corrections, the verdicts of
the equivalence tests, and the power the run had (analysis.families, analysis.equivalence, analysis.power)."""

from __future__ import annotations

import html
from typing import Optional

import pandas as pd

from persona_bench.analysis.equivalence import margin_words
from persona_bench.analysis.families import family_of
from persona_bench.analysis.power import mde_words


def _pts(x) -> str:
    return mde_words(x, undetectable="not detectable at this size", unit=" points")


def verdict_sentence(a: dict, family: str, noun: str) -> str:
    """'Of 16 personas, 2 differ from the control, 5 show no effect larger than 1 point, 9 are inconclusive
    (...).' for one family with equivalence tests; '' where the family is absent."""
    rec = family_of(a.get("families") or [], family)
    if rec is None or "equivalence_margin" not in rec:
        return ""
    counts = rec.get("verdicts") or {}
    m = margin_words(rec["equivalence_margin"])
    order = ["effect", f"effect smaller than {m}", f"no effect larger than {m}", "inconclusive"]
    said = ", ".join(f"{counts[v]} {html.escape(v)}" for v in order if counts.get(v))
    return (f"<p><b>Verdicts ({html.escape(noun)}):</b> {said or 'none tested'}. 'effect': significant after "
            f"{html.escape(rec['method_name'] or rec['method'])} over the {rec['n_tests']} tests of the family; 'no "
            f"effect larger than {m}': both one-sided tests (TOST) reject an effect of {m} or more, after the same "
            f"correction (margin: report.equivalence_margin); 'inconclusive': neither, so the data can rule out "
            f"neither an effect of {m} nor no effect.</p>")


def power_sentence(a: dict) -> str:
    """The achieved minimum detectable effects of a model's run (analysis.power.achieved)."""
    pw: Optional[dict] = a.get("power")
    if not pw or pw.get("discordance") is None:
        return ""
    how = (f"80% power (exact McNemar, {pw['alpha']:g} two-sided, Bonferroni over the {pw['n_personas']} "
           f"personas)")
    head = (f"<p><b>Power achieved:</b> persona and control disagreed on {100 * pw['discordance']:.1f}% of the "
            f"questions (mean over personas); at that rate and {pw['n_questions']} questions, ")
    if pw["persona_mde"] == float("inf"):
        text = head + (f"no persona's difference to control can be detected with {how}, not even one where every "
                       "discordant question goes the same way.")
    else:
        text = head + f"the smallest difference to control detected with {how} is {_pts(pw['persona_mde'])}."
    att = pw.get("attributes")
    if isinstance(att, pd.DataFrame) and len(att) and att["mde"].notna().any():
        best, worst = att["mde"].min(), att["mde"].max()
        text += (f" Attribute terms (from their standard errors and degrees of freedom, Bonferroni over "
                 f"{pw.get('attribute_tests', len(att))} terms): from {_pts(best)} to {_pts(worst)}.")
    return text + "</p>"


def families_html(a: dict, table) -> str:
    """The model's declared families of tests: what each tests, how many tests, which correction."""
    recs = a.get("families") or []
    if not recs:
        return ""
    rows = pd.DataFrame([{"family": r["name"], "tests": r["what"], "n_tests": r["n_tests"],
                          "correction": r["method_name"] or r["method"], "alpha": r["alpha"],
                          "n_significant": r["n_significant"],
                          "n_equivalent": r.get("n_equivalent", "")} for r in recs])
    return ("<p><b>Families of tests and their corrections.</b> Every p-value of this model belongs to one family "
            "and is corrected within it (column p_adj); 'significant' and the red marks in the figures use p_adj "
            "only. Holm where each row is a claim (family-wise error), Benjamini-Hochberg where a table is a screen "
            "read as a whole (false discovery rate).</p>" + table(rows))
