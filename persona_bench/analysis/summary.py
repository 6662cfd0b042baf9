"""Accuracy summaries from a predictions table (pure pandas; no model, no Hydra).

Persona accuracies weight every (template, role) persona equally: each is scored on
the same questions, so this is also the mean over persona rows.

Generated answers (scoring.method=generate) may be unreadable: their `pred` is -1 and they count
as wrong, as in the paper. The label histogram counts them under "unparsed", outside the collapse
share; `generation_summary` says how many there were, where, and what the logits said instead.
"""

from __future__ import annotations

import logging
from collections import Counter

import pandas as pd

from persona_bench.inputs.questions import LETTERS
from persona_bench.outputs import CONTROL

log = logging.getLogger(__name__)

CONTROL_CHARS = r"[\x00-\x08\x0b-\x1f\x7f]"  # shown as \xNN in examples (a random model writes them)
UNPARSED = "unparsed"  # label histogram key of generated answers no parser rule could read (pred == -1)


def _acc(df: pd.DataFrame, by: str) -> dict:
    return {str(k): round(float(v), 6) for k, v in df.groupby(by, dropna=True)["correct"].mean().items()}


def _minus(acc: dict, control: float) -> dict:
    return {k: round(v - control, 6) for k, v in acc.items()}


def label_histogram(df: pd.DataFrame) -> dict[str, int]:
    """How often each answer position was predicted (A/B/C/D by position, whatever the label style), for every
    position up to the most options a question has (without an `n_choices` column, as the report reads
    predictions: up to the last position predicted or correct). Unreadable generated answers (pred -1) are
    counted under "unparsed", present only when there are any."""
    counts = Counter(int(p) for p in df["pred"])
    unparsed = sum(c for p, c in counts.items() if p < 0)
    read = [p for p in counts if p >= 0]
    n = max(read) + 1 if read else 0
    widest = df["n_choices"] if "n_choices" in df else df["answer"].astype(int) + 1
    hist = {LETTERS[i]: counts.get(i, 0) for i in range(max(n, int(widest.max()) if len(df) else 0))}
    if unparsed:
        hist[UNPARSED] = unparsed
    return hist


def collapse_share(hist: dict[str, int]) -> tuple[str, float]:
    """The most predicted label and its share of the predicted labels (unparsed answers left out)."""
    hist = {k: v for k, v in hist.items() if k != UNPARSED}
    total = sum(hist.values())
    if not total:
        return "", 0.0
    label = max(hist, key=hist.get)
    return label, hist[label] / total


# What a collapsed label histogram suggests, by scoring method (collapse_message).
COLLAPSE_ADVICE = {
    "letter": "under letter scoring this is often label bias, not knowledge: a model that does not follow the "
              "answer format (a base or small model) gives one label most of its probability whatever the "
              "question; try scoring=cloze, which scores each option's own text, or an instruction-tuned model",
    "cloze": "cloze scoring compares the options' own texts, so no label is favoured as such: the model is "
             "probably weak on these questions (near chance) and prefers the text that stands at that position "
             "(compare the correct answers' shares below); scoring.cloze_score (mean or sum) changes how option "
             "length counts; a larger model is the real remedy",
    "generate": "the answers are generated and parsed: the model may repeat one option, or the parser may read the "
                "same option from a fixed phrase; check the parser rules and unparsed examples, the prompt format "
                "(scoring.format) and scoring.generate.max_new_tokens",
}


def collapse_message(hist: dict[str, int], threshold: float, method: str | None = None) -> str | None:
    """The warning when one label takes more than `threshold` of the predicted labels (collapse_share: unparsed
    answers left out), with advice that fits the scoring method (COLLAPSE_ADVICE); None when none does."""
    label, share = collapse_share(hist)
    if share <= threshold:
        return None
    unparsed = f" ({hist[UNPARSED]} unreadable generated answers left out of the share)" if UNPARSED in hist else ""
    advice = COLLAPSE_ADVICE.get(method or "", "check the scoring method (scoring=cloze for a base model)")
    return (f"answer {label} takes {100 * share:.0f}% of all predictions (over {100 * threshold:.0f}%){unparsed}: the "
            f"scorer may be collapsed, and accuracy then measures the share of {label} answers, not knowledge; "
            f"{advice}")


def _mean(s: pd.Series) -> float:
    return round(float(s.mean()), 6) if len(s) else float("nan")


def parse_failures(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per level of `by` (template or role; the control's prompts are the level "control"): n_prompts,
    n_unparsed, failure_rate, sorted worst first (then by level)."""
    level = df[by].astype(object).where(df["template"] != CONTROL, CONTROL)
    t = (~df["parsed"].astype(bool)).groupby(level.rename(by), dropna=True).agg(["size", "sum", "mean"])
    t = t.reset_index().rename(columns={by: "level", "size": "n_prompts", "sum": "n_unparsed", "mean": "failure_rate"})
    t["n_unparsed"] = t["n_unparsed"].astype(int)
    return t.sort_values(["failure_rate", "level"], ascending=[False, True], kind="stable").reset_index(drop=True)


def generation_summary(df: pd.DataFrame) -> dict:
    """What generation and its parser did, for predictions with a `parsed` column (scoring.method=generate).

    accuracy: over all prompts (unparsed = wrong; as accuracy_summary); parsed_accuracy: over the parsed
    prompts only (persona_mean: over the parsed persona prompts); parse_failure_rate: overall, control,
    persona, by template, by role; parse_rules: prompts per parser rule. logit: where the rows carry
    `logit_pred` >= 0 (letter scoring's argmax on the same prompt), its accuracy and its agreement with the
    generated answer over all those prompts and over the parsed ones; None where no prompt has it."""
    parsed = df["parsed"].astype(bool)
    ctrl = df["template"] == CONTROL
    failures = {by: parse_failures(df, by) for by in ("template", "role")}
    out = {
        "n_prompts": int(len(df)),
        "n_parsed": int(parsed.sum()),
        "accuracy": {"all": _mean(df["correct"]), "control": _mean(df.loc[ctrl, "correct"]),
                     "persona_mean": _mean(df.loc[~ctrl, "correct"])},
        "parsed_accuracy": {"all": _mean(df.loc[parsed, "correct"]), "control": _mean(df.loc[ctrl & parsed, "correct"]),
                            "persona_mean": _mean(df.loc[~ctrl & parsed, "correct"])},
        "parse_failure_rate": {
            "all": _mean(~parsed), "control": _mean(~parsed[ctrl]), "persona": _mean(~parsed[~ctrl]),
            **{by: {str(r.level): round(float(r.failure_rate), 6) for r in t.itertuples()} for by, t in failures.items()}},
        "parse_rules": {str(k): int(v) for k, v in df["parse_rule"].astype(object).fillna("(none)").value_counts().items()}
        if "parse_rule" in df else {},
        "logit": None,
    }
    if "logit_pred" in df:
        lp = df["logit_pred"].fillna(-1).astype(int)
        ok = lp >= 0
        if ok.any():
            right = lp == df["answer"]
            same = lp == df["pred"]
            out["logit"] = {
                "n_prompts": int(ok.sum()),
                "accuracy": {"all": _mean(right[ok]), "control": _mean(right[ok & ctrl]),
                             "persona_mean": _mean(right[ok & ~ctrl])},
                "agreement": _mean(same[ok]), "agreement_parsed": _mean(same[ok & parsed]),
            }
    acc, pacc, fail = out["accuracy"], out["parsed_accuracy"], out["parse_failure_rate"]
    log.info("generation: accuracy %.4f over all %d prompts, %.4f over the %d parsed; %.1f%% unparsed (control "
             "%.1f%%, personas %.1f%%)%s", acc["all"], len(df), pacc["all"], out["n_parsed"], 100 * fail["all"],
             100 * fail["control"], 100 * fail["persona"],
             "" if out["logit"] is None else f"; letter logits on the same prompts: accuracy "
             f"{out['logit']['accuracy']['all']:.4f}, same answer on {100 * out['logit']['agreement']:.1f}%")
    return out


def accuracy_summary(df: pd.DataFrame, collapse_warning: float = 0.6, method: str | None = None) -> dict:
    """Control, persona mean, per template/role/category/gender accuracy, deltas to control, label histogram;
    with generated answers (a `parsed` column) also `generation` (generation_summary). Logs collapse_message's
    warning (advice for the scoring `method`) when one label takes more than `collapse_warning`."""
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
    _, share = collapse_share(hist)
    out["pred_histogram"] = hist
    out["pred_top_share"] = round(share, 4)
    if "parsed" in df:
        out["generation"] = generation_summary(df)
    warning = collapse_message(hist, collapse_warning, method)
    if warning:
        log.warning("%s", warning)
    return out


def unparsed_examples(df: pd.DataFrame, n: int = 5, chars: int = 300, seed: int = 0) -> pd.DataFrame:
    """Up to `n` unparsed prompts with their generated text (cut to `chars`, "..." marks a cut; control
    characters other than newline and tab written as \\xNN), drawn at random (fixed seed) from those that carry
    a text: question_id, template, role, parse_rule, generation."""
    cols = [c for c in ("question_id", "template", "role", "parse_rule", "generation") if c in df]
    if "generation" not in df or "parsed" not in df:
        return pd.DataFrame(columns=cols)
    bad = df.loc[~df["parsed"].astype(bool) & df["generation"].notna(), cols]
    bad = bad.sample(min(n, len(bad)), random_state=seed).sort_values(["template", "question_id"])
    text = bad["generation"].astype(str).str.replace(CONTROL_CHARS, lambda m: f"\\x{ord(m.group()):02x}", regex=True)
    return bad.assign(generation=text.where(text.str.len() <= chars, text.str[:chars] + "...")).reset_index(drop=True)
