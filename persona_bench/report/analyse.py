"""Everything the report says, computed from saved runs: per model and across models, as one dict."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from persona_bench.analysis import (
    attributes,
    compare,
    effects,
    families,
    mechanisms,
    pairs,
    power,
    shrinkage,
    strategies,
    subjects,
)
from persona_bench.analysis.equivalence import DEFAULT_MARGIN
from persona_bench.analysis.matrix import PersonaMatrix
from persona_bench.analysis.runs import Results
from persona_bench.analysis.summary import (
    UNPARSED,
    collapse_message,
    collapse_share,
    generation_summary,
    label_histogram,
    parse_failures,
    unparsed_examples,
)
from persona_bench.config.schema import ScoringConfig
from persona_bench.inputs.questions import LETTERS
from persona_bench.inputs.roles import persona_texts
from persona_bench.outputs import CONTROL

MEASURES = {  # mechanism column -> axis label
    "log10_wordfreq": "role word frequency (log10, wordfreq)",
    "log10_ngram_frequency": "role n-gram frequency (log10, paper)",
    "similarity": "prompt-question similarity (MiniLM cosine)",
    "log_perplexity": "persona prompt log perplexity (evaluated model)",
}


@dataclass
class Options:
    n_boot: int = 2000  # paired bootstrap resamples
    seed: int = 0
    similarity: bool = True  # MiniLM prompt-question similarity and the strategies that need it
    equivalence_margin: float = DEFAULT_MARGIN  # accuracy difference below which TOST may say "no effect" (0.01 = 1 point)


def _mechanism_points(personas: pd.DataFrame, roles: list[dict], texts: pd.DataFrame, df: pd.DataFrame,
                      perplexity: Optional[pd.DataFrame], opts: Options) -> pd.DataFrame:
    """One row per persona: its delta and every mechanism measure that could be computed."""
    pts = personas[["template", "role", "accuracy", "delta"]].copy()
    freq = mechanisms.role_frequencies(roles)
    zipf = pd.to_numeric(freq["wordfreq_zipf"], errors="coerce")
    ngram = pd.to_numeric(freq["ngram_frequency"], errors="coerce")
    freq = freq.assign(log10_wordfreq=(zipf - 9).where(zipf > 0),  # Zipf = log10(frequency per billion words)
                       log10_ngram_frequency=np.log10(ngram.where(ngram > 0)))
    pts = pts.merge(freq[["role", "wordfreq_zipf", "log10_wordfreq", "ngram_frequency", "log10_ngram_frequency"]],
                    on="role", how="left")
    if opts.similarity:
        pts = pts.merge(mechanisms.similarity(df, texts), on=["template", "role"], how="left")
    if perplexity is not None and len(perplexity):
        ppl = perplexity[["template", "role", "perplexity"]].copy()
        ppl["log_perplexity"] = np.log(ppl["perplexity"].astype(float))
        pts = pts.merge(ppl, on=["template", "role"], how="left")
    return pts


def predicted_labels(df: pd.DataFrame, runs: list) -> dict:
    """How often each answer position was predicted, beside how often it is the correct one, and the collapse
    warning (analysis.summary.collapse_message, with the threshold and the scoring method the runs had; None
    when no label takes more than the threshold)."""
    first = runs[0] if runs else None
    scoring = (first.summary.get("scoring") or {}) if first else {}
    threshold = ((first.identity.get("scoring") or {}).get("collapse_warning") if first else None) \
        or ScoringConfig.collapse_warning
    hist = label_histogram(df)
    label, share = collapse_share(hist)
    answers = df["answer"].astype(int).value_counts()
    n_read = sum(v for k, v in hist.items() if k != UNPARSED)
    rows = []
    for k, v in hist.items():
        read = k != UNPARSED  # unreadable generated answers: counted, outside the shares
        right = int(answers.get(LETTERS.index(k), 0)) if read else None
        rows.append({"label": k, "predicted": v, "predicted_share": v / n_read if read and n_read else None,
                     "correct_answer": right, "correct_share": right / len(df) if read and len(df) else None})
    table = pd.DataFrame(rows)
    return {"histogram": hist, "table": table, "top_label": label, "top_share": round(share, 4),
            "threshold": threshold, "method": scoring.get("method"),
            "warning": collapse_message(hist, threshold, scoring.get("method"))}


def analyse_model(df: pd.DataFrame, results: Results, model: str, opts: Options) -> dict:
    started = time.perf_counter()
    grid = PersonaMatrix.from_predictions(df)
    out = effects.analyse(df, n_boot=opts.n_boot, seed=opts.seed, grid=grid)
    out["template_pairs"] = pairs.template_pairs(grid, n_boot=opts.n_boot, seed=opts.seed)
    out["gender_pairs"] = pairs.gender_pairs(grid, n_boot=opts.n_boot, seed=opts.seed)
    out["subject_template"] = subjects.subject_template(grid)
    out["predicted_labels"] = predicted_labels(df, results.runs.get(model, []))
    used = sorted(df.loc[df["template"] != CONTROL, "role"].dropna().unique())
    roles = (results.roles[results.roles["name"].isin(used)] if len(results.roles) else pd.DataFrame({"name": used}))
    roles = roles.to_dict("records")
    texts = persona_texts({k: v for k, v in results.templates.items() if k != CONTROL}, roles)
    points = _mechanism_points(out["persona_effects"], roles, texts, df, results.perplexity.get(model), opts)
    cols = [c for c in MEASURES if c in points and points[c].notna().sum() >= 3]
    out["mechanisms"] = points
    out["correlations"] = mechanisms.correlations(points, cols) if cols else pd.DataFrame()  # one point per role
    out["attributes"] = attributes.attribute_effects(df)  # adjusted attribute effects, roles and questions crossed
    picks = results.self_pick.get(model)
    out["strategies"] = strategies.evaluate_strategies(
        df, texts, n_boot=opts.n_boot, seed=opts.seed, use_similarity=opts.similarity,
        picks=None if picks is None else dict(zip(picks["question_id"], picks["role"])))
    out["shrinkage"] = shrinkage.shrink(df, n_boot=opts.n_boot, seed=opts.seed)
    out["best_persona"] = shrinkage.best_persona(out["shrinkage"])
    if "parsed" in df:  # generated answers
        out["generation"] = {**generation_summary(df), "failure_by_template": parse_failures(df, "template"),
                             "failure_by_role": parse_failures(df, "role"), "examples": unparsed_examples(df)}
    out["families"] = families.apply(out, margin=opts.equivalence_margin)  # p_adj, significant, verdicts: last
    out["power"] = power.achieved(out["persona_effects"], next(iter(families.tables(out, "attributes")), None))
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


def analyse_all(results: Results, opts: Options) -> dict:
    per_model = {m: analyse_model(df, results, m, opts) for m, df in results.predictions.items()}
    personas = {m: a["persona_effects"] for m, a in per_model.items()}
    cross = {"side_by_side": best_columns(effects.side_by_side(per_model), per_model)}
    if len(per_model) > 1:
        cross["rank_agreement"] = effects.rank_agreement(personas)
    cross["role_model_delta"] = pd.DataFrame({m: p.groupby("role")["delta"].mean() for m, p in personas.items()})
    lvg = compare.logit_vs_generation(results)
    if lvg is not None:
        cross["logit_vs_generation"], cross["logit_vs_generation_personas"] = lvg
    cross["families"] = families.apply_cross(cross, per_model, margin=opts.equivalence_margin)
    return {"per_model": per_model, "cross_model": cross}


def best_columns(sbs: pd.DataFrame, per_model: dict) -> pd.DataFrame:
    """side_by_side with its best persona chosen and stated selection-aware (analysis.shrinkage): the largest
    shrunken difference, its raw difference, the empirical-Bayes interval, the simultaneous interval, the rank
    interval and its Holm p (persona family); the raw maximum's unadjusted interval is left out."""
    best = [per_model[m].get("best_persona") or {} for m in sbs["model"]]
    holm = []
    for m, b in zip(sbs["model"], best):
        pe = per_model[m]["persona_effects"]
        row = pe[(pe["template"] == b.get("template")) & (pe["role"] == b.get("role"))] if b else pe.iloc[:0]
        holm.append(float(row["p_holm"].iloc[0]) if len(row) and "p_holm" in row else np.nan)
    at = list(sbs.columns).index("best_persona") if "best_persona" in sbs else len(sbs.columns)
    raw = ["best_persona", "best_delta", "best_ci_low", "best_ci_high", "best_p_holm"]
    out = sbs.drop(columns=raw, errors="ignore")
    cols = {"best_persona": "persona", "best_raw_delta": "delta", "best_shrunken": "shrunken",
            "best_ci_low": "ci_low", "best_ci_high": "ci_high", "best_sim_ci_low": "sim_ci_low",
            "best_sim_ci_high": "sim_ci_high", "best_rank_ci_low": "rank_ci_low", "best_rank_ci_high": "rank_ci_high",
            "n_could_be_best": "n_could_be_best"}
    for i, (name, key) in enumerate(cols.items()):
        out.insert(at + i, name, [b.get(key) for b in best])
    out.insert(at + len(cols), "best_p_holm", holm)
    return out


def domain_table(dm: dict) -> pd.DataFrame:
    """effects.domain_match's result as rows: in-domain, out-of-domain (each vs control) and their difference."""
    rows = [{"level": "in-domain questions", **dm.get("in_domain", {})},
            {"level": "out-of-domain questions", **dm.get("out_of_domain", {})},
            {"level": "difference (in - out)", "estimate": dm.get("difference"), "ci_low": dm.get("ci_low"),
             "ci_high": dm.get("ci_high"), "p": dm.get("p"), "p_adj": dm.get("p_adj"),
             "significant": dm.get("significant")}]
    t = pd.DataFrame(rows).rename(columns={"estimate": "delta"})
    t["n_roles"] = dm.get("n_roles")
    t["n_pairs"] = [dm.get("n_pairs_in"), dm.get("n_pairs_out"), None]
    return t


def jsonable(obj):
    """effects.to_records, with indexed tables (the role x model matrix) keeping their index as a column."""
    if isinstance(obj, pd.DataFrame) and not isinstance(obj.index, pd.RangeIndex):
        obj = obj.reset_index()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    return effects.to_records(obj)


def methods(result: dict) -> list[str]:
    """METHODS, with the generation notes where the report holds generated answers."""
    gen = any("generation" in a for a in result["per_model"].values())
    return METHODS + (GENERATION_METHODS if gen or "logit_vs_generation" in result["cross_model"] else [])


GENERATION_METHODS = [
    "Generated answers (scoring.method=generate): a parser reads the chosen option from the generated text; an "
    "answer it cannot read counts as wrong (as in the paper). Accuracy over the parsed prompts only is given beside "
    "it. Logit scoring against generation: the letter logits at the first generated position of the same prompt, "
    "or another run of the same model scored by logits, matched on (question, template, role).",
]

METHODS = [
    "Each persona (template x role) is compared with the no-persona control on the same questions: the difference "
    "in accuracy, a paired bootstrap 95% interval over questions, and an exact McNemar test on the discordant "
    "questions. 'significant' means p < 0.05 after Holm's correction across all persona comparisons of the model "
    "(family-wise error 5%); Benjamini-Hochberg q-values are given beside it.",
    "Attribute effects (the headline contrasts): one linear probability model per model for template, role "
    "category, interpersonal, gender, expertise domain and domain match (centred within persona), with question "
    "intercepts; two-way cluster-robust errors by question and role (CR2 for roles), t intervals with Bell-McCaffrey "
    "degrees of freedom, so roles count as a sample of their kind; a collinearity table and warnings say when a "
    "term rests on few roles (docs/statistics.md).",
    "Factor levels (template, role category, gender, domain, interpersonal) average the personas of the level and "
    "compare with control on the same questions, with paired bootstrap intervals: descriptive, unadjusted.",
    "The regression's specification is printed with its table; it treats the roles as fixed. Aliased terms are "
    "found by a QR decomposition with a tolerance, dropped and named.",
    "Mechanisms (one point per role: differences and measures averaged over the role's templates): word frequency from the wordfreq package (Zipf scale minus 9 = log10 frequency) and the paper's "
    "n-gram frequency; prompt-question similarity is the cosine of all-MiniLM-L6-v2 embeddings of the persona "
    "sentence and the question as prompted; perplexity is that of the persona sentence under the evaluated model. "
    "Pearson correlations with Fisher-z intervals, and Spearman's rho.",
    "Families of tests: every p-value belongs to one declared family of the model (persona vs control, "
    "attribute effects, contrasts, strategies: Holm; factor levels, regression terms, mechanism correlations, "
    "logit vs generation: Benjamini-Hochberg) and is corrected within it (p_adj); 'significant' and the figures "
    "use p_adj only. Equivalence: two one-sided tests (TOST) against report.equivalence_margin, corrected the same "
    "way, give the verdicts 'no effect larger than the margin' and 'inconclusive'. Power: the minimum detectable "
    "effect at 80% power, alpha 0.05 two-sided, Bonferroni over the family (docs/statistics.md).",
    "Persona-selection strategies are chosen on the train questions (and val, where they tune anything) of the "
    "paper's split and evaluated on its test questions against the control on the same questions. Their intervals "
    "re-run the choice on resampled train questions where it depends on them (best on train, per subject, in "
    "domain); the classifier's fit is kept fixed. The random strategy is its exact expected accuracy (the mean over "
    "personas on each question), tested with a paired t-test over the test questions.",
    "The best persona is the one with the largest empirical-Bayes shrunken difference to control (normal prior on "
    "the deviations from the persona mean, REML variance), shown with its posterior interval, a simultaneous "
    "interval over all personas and a confidence interval for its rank (Mogstad et al. 2024).",
]
