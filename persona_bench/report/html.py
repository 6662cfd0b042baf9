"""report.html: one self-contained page (figures embedded, tables, the regression, run stamps)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

import pandas as pd

from persona_bench.analysis.runs import Results
from persona_bench.report.analyse import domain_table, methods
from persona_bench.report.claims import families_html, power_sentence, verdict_sentence
from persona_bench.report.cross_html import cross_model_html
from persona_bench.report.tables import FEW_QUESTIONS, few_questions_badge, figure_html, header, table_html

CSS = """body{font-family:system-ui,sans-serif;max-width:1320px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}h3{margin-top:1.4em}
p,li{max-width:1100px}
table{border-collapse:collapse;font-size:.85em;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f3f3f3;vertical-align:bottom;max-width:8.5em}td:first-child{overflow-wrap:anywhere}.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.9em}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.8em}
nav a{margin-right:12px}details{margin:6px 0}.scroll{overflow-x:auto;max-width:100%}
.warning{background:#fff0f0;border:2px solid #c00;padding:8px 12px;margin:10px 0}
.badge{background:#fff8e1;border-left:5px solid #e6a700;padding:4px 10px;margin:8px 0;font-size:.9em}"""


def _table(df, max_rows: Optional[int] = None, unit: Optional[str] = "points", **kw) -> str:
    return table_html(df, unit=unit, max_rows=max_rows, **kw)


def _num(x) -> str:
    """A difference in accuracy points: '+3.8 pts'."""
    return "n/a" if x is None or x != x else f"{100 * x:+.1f} pts"


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.0f}%"


def _acc(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _img(path: Path, alt: str, n: Optional[int] = None, what: str = "questions") -> str:
    return figure_html(path, alt, n, what)


HEADLINE = ["model", "n_questions", "n_personas", "control_accuracy", "persona_accuracy", "delta", "ci_low", "ci_high",
            "p", "p_adj", "significant", "n_significant_better", "n_significant_worse", "share_significant"]
BEST = {"model": "model", "best_persona": "persona", "best_raw_delta": "delta", "best_shrunken": "shrunken",
        "best_ci_low": "ci_low", "best_ci_high": "ci_high", "best_sim_ci_low": "sim_ci_low",
        "best_sim_ci_high": "sim_ci_high", "best_rank_ci_low": "rank_ci_low", "best_rank_ci_high": "rank_ci_high",
        "n_could_be_best": "n_could_be_best", "best_p_holm": "best_p_holm"}


def _headline_html(sbs: pd.DataFrame) -> str:
    """The side-by-side table as two narrower ones: every persona against control, and the best persona."""
    if sbs is None or not len(sbs):
        return _table(sbs)
    best = sbs[[c for c in BEST if c in sbs]].rename(columns=BEST)
    return ("<p><b>All personas together against the control</b> (mean over personas; p corrected in the "
            "contrasts family):</p>" + _table(sbs[[c for c in HEADLINE if c in sbs]])
            + "<p><b>The best persona</b>, chosen selection-aware (largest shrunken difference; its interval, "
            "simultaneous interval over all personas and rank interval; see each model's section):</p>"
            + _table(best))


RANDOMNESS = {  # randomness key -> (what it measures, unit: "n", "%" or "pts")
    "n_questions": ("questions", "n"), "n_personas": ("personas", "n"),
    "mean_sd_across_personas": ("mean SD of correctness across personas, per question", "pts"),
    "share_questions_personas_disagree": ("questions on which the personas disagree", "%"),
    "share_questions_all_agree_with_control": ("questions on which every persona agrees with the control", "%"),
    "share_questions_some_persona_flips_control": ("questions on which some persona differs from the control", "%"),
    "n_splits": ("random halvings of the questions", "n"),
    "share_best_above_control_on_b": ("halvings where the best persona of one half beats control on the other", "%"),
    "mean_delta_a_best": ("the best persona's difference on the half that chose it", "pts"),
    "mean_delta_b_best": ("the same persona's difference on the other half", "pts"),
    "mean_delta_b_all": ("every persona's mean difference on the other half", "pts"),
    "share_same_best": ("halvings where both halves pick the same best persona", "%"),
    "mean_spearman_halves": ("rank correlation of the persona differences between halves (Spearman)", "n"),
}


def _randomness_table(rnd: dict) -> pd.DataFrame:
    rows = []
    for k, v in rnd.items():
        what, unit = RANDOMNESS.get(k, (k.replace("_", " "), "n"))
        if v is None or v != v:
            shown = ""
        elif unit == "pts":
            shown = f"{100 * v:+.1f} pts" if "delta" in k else f"{100 * v:.1f} pts"
        elif unit == "%":
            shown = f"{100 * v:.1f}%"
        else:
            shown = f"{v:,}" if isinstance(v, int) else f"{v:.3g}"
        rows.append({"measure": what, "value": shown})
    return pd.DataFrame(rows)


def render_html(result: dict, results: Results, figs: dict[str, Path], meta: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>persona-bench report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>persona-bench report</h1>",
             f"<p class='note'>Made {e(meta['created'])} from {len(meta['runs'])} run(s) of "
             f"{len(result['per_model'])} model(s) by <code>{e(meta['command'])}</code>. "
             f"Intervals are 95% paired bootstrap intervals over questions ({meta['options']['n_boot']} resamples); "
             "accuracies are in %, differences in accuracy points (pts: +1.0 = one percentage point more "
             f"accuracy than the control). A yellow badge marks a table or figure that rests on fewer than "
             f"{FEW_QUESTIONS} questions.</p>",
             *(f"<p class='warning'><b>Warning:</b> {e(w)}</p>" for w in meta.get("warnings", [])),
             "<nav>" + "".join(f"<a href='#{e(m)}'>{e(m)}</a>" for m in result["per_model"]) +
             "<a href='#cross'>models side by side</a><a href='#methods'>methods</a><a href='#runs'>runs</a></nav>",
             "<h2 id='headline'>Headline</h2>", _headline_html(result["cross_model"]["side_by_side"]),
             _noise_floor_html(meta["runs"])]
    for model, a in result["per_model"].items():
        parts.append(f"<h2 id='{e(model)}'>{e(model)}</h2>")
        labels = a.get("predicted_labels") or {}
        if labels.get("warning"):
            parts.append(f"<p class='warning' id='{e(model)}-collapse'><b>Warning:</b> {e(labels['warning'])}</p>")
        p = a["persona_effects"]
        n_sig = int(p["significant"].fillna(False).astype(bool).sum()) if len(p) else 0
        parts.append(f"<p>{len(p)} personas; {n_sig} differ from control after Holm's correction "
                     f"across all {len(p)} persona comparisons (exact McNemar tests).</p>")
        parts += [verdict_sentence(a, "persona_vs_control", "personas against the control"), power_sentence(a),
                  families_html(a, _table)]
        if "generation" in a:
            parts.append(_generation_html(a["generation"]))
        if labels:
            parts.append(_predicted_labels_html(labels))
        parts.append("<h3>Does any persona beat the control?</h3>")
        if f"{model}/personas" in figs:
            parts.append(_img(figs[f"{model}/personas"], f"{model} persona differences"))
        short = [c for c in ("template", "role", "n_questions", "accuracy", "control_accuracy", "delta", "ci_low",
                             "ci_high", "n_better", "n_worse", "p_adj", "significant", "verdict") if c in p]
        cols = [c for c in ("template", "role", "role_category", "gender", "domain", "n_questions", "accuracy",
                            "control_accuracy", "delta", "ci_low", "ci_high", "n_better", "n_worse", "p", "p_adj",
                            "q_bh", "significant", "p_equiv_adj", "verdict") if c in p]
        ranked = p.sort_values("delta", ascending=False)
        if len(ranked) > 20:
            parts.append("<p>Best ten and worst ten personas:</p>" + _table(ranked[short].head(10))
                         + _table(ranked[short].tail(10)))
            parts.append(f"<details><summary>all {len(ranked)} personas</summary>" + _table(ranked[cols])
                         + "</details>")
        else:
            parts.append(_table(ranked[cols]))
        if "shrinkage" in a:
            parts.append(_best_persona_html(a["shrinkage"], a.get("best_persona") or {}))
        if "attributes" in a:
            parts.append(_attributes_html(a["attributes"]) + verdict_sentence(a, "attributes", "attribute effects"))
        parts.append("<h3>Factors, descriptive (unadjusted): template, role category, gender</h3>"
                     "<p class='note'>Raw group means and differences, each level against control on the same "
                     "questions. They do not adjust one attribute for another (19 of the paper's 26 gendered roles are "
                     "family roles) and treat the roles as fixed: describe with them, conclude with the adjusted "
                     "attribute effects above.</p>")
        if f"{model}/factors" in figs:
            parts.append(_img(figs[f"{model}/factors"], f"{model} factors"))
        for name, t in a["groups"].items():
            parts.append(f"<p><b>by {e(header(name))}</b> (descriptive, unadjusted)</p>"
                         + _table(t.drop(columns=["factor"], errors="ignore")))
        parts.append("<p><b>contrasts</b> (descriptive, unadjusted)</p>" + _table(a["contrasts"]))
        parts.append("<h3>Expertise domains, descriptive (unadjusted): in-domain versus out-of-domain questions</h3>"
                     "<p class='note'>In-domain and out-of-domain pairs lie on different questions, so a subject on "
                     "which every persona is weaker shifts this difference; the adjusted domain match (same role, same "
                     "questions) is in the attribute effects above.</p>")
        if f"{model}/domains" in figs:
            parts.append(_img(figs[f"{model}/domains"], f"{model} domains"))
        parts.append(_table(domain_table(a["domain_match"])))
        reg = a["regression"]
        parts.append(f"<h3>{e(str(reg.get('title') or 'Regression'))} (roles fixed)</h3>")
        parts.append(f"<p class='note'>{e(str(reg.get('specification', '')))}</p>")
        parts.append(_table(reg.get("coefficients")))
        parts.append(f"<p class='note'>n = {reg.get('n_obs')} persona prompts on {reg.get('n_questions')} questions; "
                     f"converged: {reg.get('converged')}; terms dropped: {e(', '.join(reg.get('dropped') or []) or 'none')}"
                     f"{e('; ' + '; '.join(reg['notes'])) if reg.get('notes') else ''}</p>")
        rnd = a["randomness"]
        parts.append("<h3>How random is it?</h3>")
        parts.append(f"<p>Over {rnd.get('n_splits')} random halvings of the questions, the persona that is best on "
                     f"one half is above control on the other half in {_pct(rnd.get('share_best_above_control_on_b'))} "
                     f"of the splits (its difference there: {_num(rnd.get('mean_delta_b_best'))}, against "
                     f"{_num(rnd.get('mean_delta_a_best'))} on the half that chose it). On "
                     f"{_pct(rnd.get('share_questions_personas_disagree'))} of the questions the personas disagree "
                     f"about correctness.</p>")
        parts.append(_table(_randomness_table(rnd), transpose=False))
        parts.append("<h3>Mechanisms: why do some personas do better?</h3>")
        if f"{model}/mechanisms" in figs:
            parts.append(_img(figs[f"{model}/mechanisms"], f"{model} mechanisms"))
        parts.append(_table(a["correlations"], unit=None))
        parts.append("<h3>Can the best persona be found automatically?</h3>")
        if f"{model}/strategies" in figs:
            n_test = int(a["strategies"]["n_test"].max())
            parts.append((few_questions_badge(n_test, "test questions") if n_test < FEW_QUESTIONS else "")
                         + _img(figs[f"{model}/strategies"], f"{model} strategies"))
        parts.append("<p class='note'><i>interval</i>: 'selection re-run' resamples the train and the test questions "
                     "and chooses again on every resample, so the interval includes the luck of the train questions; "
                     "'test questions' holds the choice fixed (the strategies without a training step, and the "
                     "classifier, whose fit is kept). <i>p</i> is raw (see <i>test</i>); the random strategy is its "
                     "exact expected accuracy, tested with a paired t-test over the test questions.</p>")
        st = a["strategies"]
        parts.append(_table(st.drop(columns=["detail"], errors="ignore"), n_col="", transpose=False))
        if "detail" in st:  # the badge stands above the figure
            parts.append("<details><summary>what each strategy chose</summary><ul>" + "".join(
                f"<li><b>{e(str(r.strategy))}</b>: {e(str(r.detail))}</li>" for r in st.itertuples()) + "</ul></details>")
    parts.append(cross_model_html(result, figs))
    if "logit_vs_generation" in result["cross_model"]:
        parts.append(_logit_vs_generation_html(result["cross_model"]["logit_vs_generation"], figs))
    parts.append("<h2 id='methods'>Methods</h2><ul>" + "".join(f"<li>{e(m)}</li>" for m in methods(result)) + "</ul>")
    parts.append("<h2 id='runs'>Runs: data and model stamps</h2>")
    stamps = pd.DataFrame([_stamp_row(r) for r in meta["runs"]])
    parts.append(_table(stamps, unit=None))
    parts.append("</body></html>")
    return "\n".join(parts)


def _generation_html(gen: dict) -> str:
    """A generate run's answers: accuracy over all and parsed prompts, where parsing failed, the rules, examples."""
    e = html.escape
    acc, pacc, fail = gen["accuracy"], gen["parsed_accuracy"], gen["parse_failure_rate"]
    parts = ["<h3>Generated answers: what the parser could read</h3>",
             f"<p>{gen['n_parsed']:,} of {gen['n_prompts']:,} generated answers were read as an option "
             f"({_pct(1 - fail['all'])}); the rest count as wrong. Accuracy over all prompts: control "
             f"{_acc(acc['control'])}, persona mean {_acc(acc['persona_mean'])}; over the parsed prompts only: control "
             f"{_acc(pacc['control'])}, persona mean {_acc(pacc['persona_mean'])}. Unparsed: control "
             f"{_pct(fail['control'])}, personas {_pct(fail['persona'])}.</p>"]
    lg = gen.get("logit")
    if lg:
        parts.append(f"<p>Letter logits at the first generated position of the same {lg['n_prompts']:,} prompts: "
                     f"accuracy control {_acc(lg['accuracy']['control'])}, persona mean {_acc(lg['accuracy']['persona_mean'])}; "
                     f"the same option as the generated answer on {_pct(lg['agreement'])} of the prompts "
                     f"({_pct(lg['agreement_parsed'])} of the parsed ones).</p>")
    for by in ("template", "role"):
        t = gen[f"failure_by_{by}"]
        parts.append(f"<p><b>parse failures by {by}</b> (worst first{', top 20' if len(t) > 20 else ''})</p>"
                     + _table(t.rename(columns={"level": by}), max_rows=20))
    rules = pd.DataFrame({"parse_rule": list(gen["parse_rules"]), "n_prompts": list(gen["parse_rules"].values())})
    parts.append("<p><b>parser rules</b> (the rule that decided, or why none did)</p>" + _table(rules))
    ex = gen["examples"]
    if len(ex):
        parts.append("<p><b>unparsed answers</b> (examples)</p><ul>" + "".join(
            f"<li><code>{e(str(r.question_id))}</code>, {e(str(r.template))}"
            f"{'' if not isinstance(r.role, str) else ' / ' + e(r.role)}, rule {e(str(getattr(r, 'parse_rule', '')))}:"
            f"<pre>{e(str(r.generation))}</pre></li>" for r in ex.itertuples()) + "</ul>")
    return "\n".join(parts)


def _predicted_labels_html(labels: dict) -> str:
    """The predicted-label histogram beside the correct answers' (the collapse check; its warning stands at the
    top of the model's section)."""
    return ("<h3>Predicted answers</h3>"
            f"<p>How often each answer position was predicted, beside how often it is the correct answer. The most "
            f"predicted, {html.escape(str(labels['top_label']))}, takes {_pct(labels['top_share'])} of the predictions; "
            f"above {_pct(labels['threshold'])} (scoring.collapse_warning) the scorer may be collapsed.</p>"
            + _table(labels["table"]))


def _best_persona_html(table: pd.DataFrame, best: dict) -> str:
    """The selection-aware best persona and the ten largest shrunken differences (analysis.shrinkage)."""
    parts = ["<h3>Which persona is best? Shrunken estimates and rank intervals</h3>",
             "<p class='note'>The largest of hundreds of noisy differences overstates its persona. <i>shrunken</i> "
             "is the empirical-Bayes estimate (each persona's deviation from the persona mean pulled toward 0 by how "
             "noisy it is, normal prior) with its <i>95% CI</i>; the <i>simultaneous 95% CI</i> holds over all "
             "personas at once, valid for a persona picked after looking, whatever the prior; <i>rank 95% CI</i> is a "
             "95% confidence interval for the persona's rank (1 = best; Mogstad et al. 2024). <i>prior outlier</i>: "
             "the normal prior does not explain this persona; read its simultaneous interval.</p>"]
    if best:
        outlier = (" The normal prior does not fit this persona (an isolated difference): its shrunken estimate "
                   "may be pulled too far; the simultaneous interval holds." if best.get("prior_outlier") else "")
        parts.append(f"<p><b>Best persona</b> (largest shrunken difference): {html.escape(str(best['persona']))}, "
                     f"shrunken {_num(best['shrunken'])} [{_num(best['ci_low'])}, {_num(best['ci_high'])}], raw "
                     f"{_num(best['delta'])} (simultaneous [{_num(best['sim_ci_low'])}, {_num(best['sim_ci_high'])}]); "
                     f"its rank is between {best['rank_ci_low']} and {best['rank_ci_high']}, and "
                     f"{best['n_could_be_best']} of {len(table)} personas could be the best (rank interval reaching "
                     f"1).{outlier}</p>")
    top = table.sort_values(["shrunken", "delta"], ascending=False).head(10)
    return "\n".join(parts) + _table(top)


def _attributes_html(att: dict) -> str:
    """The adjusted attribute effects (analysis.attributes): the headline contrasts, their warnings, collinearity."""
    e = html.escape
    parts = ["<h3>Attribute effects, adjusted: which kinds of role help?</h3>",
             "<p>One model for template, role category, interpersonal, gender, expertise domain and domain match "
             "together, with questions and roles as crossed random factors: each term is adjusted for the others, "
             "and its interval treats the role words as a sample of their kind (two-way cluster-robust errors by "
             "question and role, Bell-McCaffrey degrees of freedom: few roles behind a term give few degrees of "
             "freedom and a wide interval). Domain match compares a role on its own domain's questions with itself "
             "elsewhere, on the same questions as the other personas. <i>p</i> is raw; corrected values are in the "
             "families table.</p>",
             ("<div class='warning'><b>Collinearity:</b><ul>" + "".join(f"<li>{e(w)}</li>" for w in att["warnings"])
              + "</ul></div>" if att.get("warnings") else ""),
             _table(pd.DataFrame(att.get("estimates")).drop(columns=["factor", "level", "equivalent"],
                                                             errors="ignore")),
             f"<p class='note'>{e(str(att.get('specification', '')))} n = {att.get('n_obs')} persona prompts, "
             f"{att.get('n_roles')} roles, {att.get('n_questions')} questions. Not estimated (aliased): "
             f"{e('; '.join(att.get('dropped') or []) or 'none')}. {e(' '.join(att.get('notes') or []))}</p>",
             "<details><summary>collinearity: roles per attribute level and variance inflation</summary>"
             + _table(att.get("collinearity")) + "</details>"]
    return "\n".join(parts)


def _logit_vs_generation_html(pairs: pd.DataFrame, figs: dict[str, Path]) -> str:
    parts = ["<h3 id='logit-vs-generation'>Logit scoring versus generation</h3>",
             "<p>The same prompts answered two ways: by the answer labels' logits and by generating text. "
             "<i>agreement</i> is the share of prompts where both give the same option (unparsed generated answers "
             "disagree); a persona's difference to control is computed under each, and <i>share_same_sign</i> is "
             "the share of personas (with a nonzero difference under both) whose two differences have the same "
             "sign; red points in the figure have opposite signs.</p>",
             "<p>Noise baseline: both readings share each prompt's luck, so their agreement can be high with no "
             "persona effect at all. The <i>split_half_*</i> columns compare persona differences on two disjoint "
             "random halves of the questions (mean over <i>n_splits</i> halvings): within one method (how "
             "reproducible the differences are) and across methods (logits on one half, generation on the other). "
             "With no persona effect they are near 0 (rank correlation) and 1/2 (sign share); agreement over all "
             "questions above <i>split_half_spearman_cross</i> is shared per-prompt noise, not a persona effect.</p>"]
    if "logit_vs_generation" in figs:
        parts.append(_img(figs["logit_vs_generation"], "persona differences: logits against generation"))
    parts.append(_table(pairs, unit=None))
    return "\n".join(parts)


def _noise_floor_html(runs: list[dict]) -> str:
    """One line per run with a numerical self-check (summary.json self_check): how far its scores are from the
    reference path's on a sample of its prompts."""
    e = html.escape
    lines = []
    for r in runs:
        sc = r.get("self_check")
        if not sc:
            continue
        who = f"{(r.get('model') or {}).get('model', '?')} ({r.get('config_id')})"
        if sc.get("agreement") is None:
            lines.append(f"{e(who)}: not measured ({e(str(sc.get('error') or sc.get('path')))})")
            continue
        lines.append(f"{e(who)}: {sc.get('n_compared', sc['n'])} prompts re-scored ({e(str(sc['path']))}; run in "
                     f"{e(str(sc.get('dtype_run')))}): the same answer on {100 * sc['agreement']:.1f}%, largest "
                     f"option-probability difference {sc['max_prob_diff']:.2g}")
    if not lines:
        return ""
    return ("<p class='note' id='noise-floor'><b>Numerical noise floor</b> (a sample of each run's prompts scored "
            "again one at a time on a plain reference path: answers that change there are numerical noise, not "
            "persona effects): " + "; ".join(lines) + ".</p>")


def _stamp_row(run: dict) -> dict:
    m = run.get("model") or {}
    d = run.get("dataset") or {}
    return {"model": m.get("model"), "config_id": run.get("config_id"), "path": run.get("path"),
            "revision": m.get("revision"), "weights_sha256": (m.get("gguf_sha256") or "")[:16] or None,
            "dtype": m.get("dtype"), "quantization": m.get("quantization"), "device": m.get("device"),
            "dataset": d.get("name"), "data_hash": d.get("data_hash"), "n_questions": d.get("n_questions"),
            "scoring": (run.get("scoring") or {}).get("method"), "n_prompts": run.get("n_prompts"),
            "transformers": (run.get("packages") or {}).get("transformers")}
