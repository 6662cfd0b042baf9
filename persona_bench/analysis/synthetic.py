"""Synthetic predictions with planted persona effects, to test the statistics in analysis.py.

    from persona_bench.analysis.synthetic import PlantedEffects, make_predictions, roles_frame
    roles, domains = roles_frame("conf/role_set/paper.yaml")
    df, truth = make_predictions(roles, n_questions=1200, effects=PlantedEffects(), seed=0, domains=domains)

Generative model (per model, one row per prompt, the predictions schema of the report contract):
- every question q has a control probability of being answered correctly, p_q = p_min + (p_max - p_min) * Beta(a, b):
  question difficulty carries most of the variance, and p_q stays inside [p_min, p_max] so that the additive
  effects below almost never need clipping (the share clipped is in truth["clipped_share"]);
- a persona k = (template, role) has p_qk = p_q + persona + template[t] + gender[g] + category[c] + role[r]
  + in_domain * [the question's subject is in the role's domain] + N(0, persona_sd) drawn once per persona;
  additive on the probability scale, clipped to [0.001, 0.999];
- correctness of all prompts of one question is correlated through a Gaussian copula: correct_qk =
  1[sqrt(rho) z_q + sqrt(1 - rho) e_qk < Phi^-1(p_qk)] with z_q, e_qk ~ N(0, 1), so P(correct_qk) = p_qk exactly
  and personas mostly agree on a question (the control row uses the same z_q).

`truth` states every effect in the terms analysis.py reports them, computed from the p_qk actually drawn:
the per-persona difference to control on the same questions, the per-level difference to control and the
contrasts between levels (means over the level's personas), and the domain-match difference-in-differences.
The regression's true coefficients are those of the same regression fitted to the noiseless p_qk, which the
rows carry in the extra column `p_true` (analysis.regression(df, outcome="p_true")).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from persona_bench.analysis.matrix import ATTRIBUTES, PersonaMatrix, level_labels
from persona_bench.outputs import CONTROL

# The 57 MMLU subjects.
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)

TEMPLATE_TEXT = {"speaker": "You are {role}.", "audience": "You are talking to {role}."}


@dataclass
class PlantedEffects:
    """Additive effects on the probability of a correct answer, relative to the control prompt."""

    template: dict = field(default_factory=lambda: {"speaker": 0.0, "audience": 0.05})  # template -> offset
    gender: dict = field(default_factory=lambda: {"neutral": 0.03})  # gender -> offset; others 0
    category: dict = field(default_factory=dict)  # role_category -> offset; none by default
    role: dict = field(default_factory=lambda: {"doctor": 0.08, "mathematician": 0.08, "janitor": -0.08,
                                                "enemy": -0.08})  # single roles -> offset
    persona: float = 0.0  # common offset of every persona against the control prompt
    in_domain: float = 0.0  # extra offset of a domain role on questions of its own domain
    persona_sd: float = 0.0  # sd of a random offset drawn once per persona (realised values go into truth)
    role_sd: float = 0.0  # sd of a random offset drawn once per role, shared by its templates (roles as a sample)
    subject: dict = field(default_factory=dict)  # subject -> offset of every persona on that subject's questions


def roles_frame(path: str | Path) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Roles (name, category, gender, domain, interpersonal) and the domain -> subjects map of a role-set YAML."""
    import yaml

    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    roles = pd.DataFrame(cfg["roles"])[["name", "category", "gender", "domain", "interpersonal"]]
    return roles, {k: list(v) for k, v in cfg["domains"].items()}


def _level_means(personas: pd.DataFrame, by: str) -> dict:
    """Mean true delta per level, levels labelled as analysis.py labels them."""
    from persona_bench.analysis.matrix import level_labels

    return {str(k): float(v) for k, v in
            personas.groupby(level_labels(personas[by], by))["true_delta"].mean().items()}


def _draw(roles: pd.DataFrame, n_questions: int, templates: tuple[str, ...], effects: Optional[PlantedEffects],
          seed: int, domains: Optional[dict[str, list[str]]],
          rho: float = 0.8,  # copula correlation of correctness between prompts of one question
          p_range: tuple[float, float] = (0.15, 0.85),  # control probabilities stay inside this range
          beta: tuple[float, float] = (1.2, 1.0),  # shape of the control-probability distribution inside p_range
          subjects: Optional[tuple[str, ...]] = None,  # the questions' subjects; None: MMLU's 57 and the domains'
          question_seed: Optional[int] = None):  # draw the questions from this seed (the same questions for several
    #   synthetic models of different `seed`); None: from `seed`
    """The questions, personas, probabilities and outcomes of one synthetic model (make_predictions, make_matrix)."""
    effects = effects or PlantedEffects()
    domains = domains or {}
    rng = np.random.default_rng(seed)
    qrng = rng if question_seed is None else np.random.default_rng(question_seed)
    roles = roles.reset_index(drop=True)
    subject_domain = {s: d for d, subjects in domains.items() for s in subjects}
    subjects = sorted(subjects) if subjects else sorted(set(MMLU_SUBJECTS) | set(subject_domain))

    # Questions.
    q_subject = qrng.choice(subjects, size=n_questions)
    q_id = np.array([f"{s}/{qrng.bytes(8).hex()}" for s in q_subject])
    p_control = p_range[0] + (p_range[1] - p_range[0]) * qrng.beta(*beta, size=n_questions)
    z = qrng.standard_normal(n_questions)
    answer = qrng.integers(0, 4, size=n_questions)
    split = qrng.choice(np.array(["train", "val", "test"]), size=n_questions, p=[0.6, 0.2, 0.2])

    # Personas: every template x every role.
    personas = pd.DataFrame([(t, i) for t in templates for i in range(len(roles))], columns=["template", "_i"])
    personas = personas.join(roles, on="_i").rename(columns={"_i": "_role", "name": "role", "category": "role_category"})
    off = (effects.persona
           + personas["template"].map(effects.template).fillna(0.0)
           + personas["gender"].map(effects.gender).fillna(0.0)
           + personas["role_category"].map(effects.category).fillna(0.0)
           + personas["role"].map(effects.role).fillna(0.0)).to_numpy(float)
    if effects.persona_sd:
        off = off + rng.normal(0.0, effects.persona_sd, size=len(personas))
    if effects.role_sd:
        off = off + rng.normal(0.0, effects.role_sd, size=len(roles))[personas["_role"].to_numpy()]
    q_domain = np.array([subject_domain.get(s) for s in q_subject], dtype=object)
    k_domain = personas["domain"].to_numpy(object)
    in_dom = (q_domain[:, None] == k_domain[None, :]) & personas["domain"].notna().to_numpy()[None, :]  # Q x K

    # Probabilities and correlated outcomes.
    raw = (p_control[:, None] + off[None, :] + effects.in_domain * in_dom
           + pd.Series(q_subject).map(effects.subject).fillna(0.0).to_numpy(float)[:, None])
    p = np.clip(raw, 0.001, 0.999)
    thresh = stats.norm.ppf(np.column_stack([p_control, p]))
    latent = np.sqrt(rho) * z[:, None] + np.sqrt(1.0 - rho) * rng.standard_normal(thresh.shape)
    correct = latent < thresh  # Q x (1 + K), column 0 is the control

    return SimpleNamespace(rng=rng, effects=effects, personas=personas, q_subject=q_subject, q_id=q_id,
                           p_control=p_control, answer=answer, split=split, in_dom=in_dom, raw=raw, p=p,
                           correct=correct)


def make_predictions(
    roles: pd.DataFrame,
    n_questions: int = 1200,
    templates: tuple[str, ...] = ("speaker", "audience"),
    effects: Optional[PlantedEffects] = None,
    seed: int = 0,
    domains: Optional[dict[str, list[str]]] = None,  # domain -> MMLU subjects (a role-set YAML's `domains:`)
    model: str = "synthetic",
    **draw,  # _draw's rho, p_range, beta, subjects and question_seed
) -> tuple[pd.DataFrame, dict]:
    """Predictions rows for every (template, role) persona and the control on n_questions questions; and the truth."""
    d = _draw(roles, n_questions, templates, effects, seed, domains, **draw)
    rng, personas, p, p_control, in_dom, correct, raw, answer = (d.rng, d.personas, d.p, d.p_control, d.in_dom,
                                                               d.correct, d.raw, d.answer)
    q_subject, q_id, split, effects = d.q_subject, d.q_id, d.split, d.effects

    # Rows: the control, then each persona, question-major.
    n_k = len(personas) + 1
    k_template = np.concatenate([[CONTROL], personas["template"].to_numpy(object)])
    k_role = np.concatenate([[None], personas["role"].to_numpy(object)])

    def k_attr(col):
        return np.tile(np.concatenate([[None], personas[col].to_numpy(object)]), n_questions)

    in_domain_col = np.column_stack([np.full(n_questions, None, dtype=object), in_dom.astype(object)])
    pred_wrong = (answer[:, None] + rng.integers(1, 4, size=correct.shape)) % 4
    pred = np.where(correct, answer[:, None], pred_wrong)
    role_rep = np.tile(k_role, n_questions)
    tmpl_rep = np.tile(k_template, n_questions)
    text = {t: TEMPLATE_TEXT.get(t, t + ": {role}.") for t in templates}
    prefix = np.array([""] + [text[t].format(role=r) + "\n" for t, r in zip(personas["template"], personas["role"])],
                      dtype=object)
    question = np.array([f"Question about {s.replace('_', ' ')}? A) ... B) ... C) ... D) ..." for s in q_subject],
                        dtype=object)
    prompt = (prefix[None, :] + question[:, None]).reshape(-1)
    df = pd.DataFrame({
        "model": model,
        "question_id": np.repeat(q_id, n_k),
        "subject": np.repeat(q_subject, n_k),
        "template": tmpl_rep,
        "role": role_rep,
        "role_category": k_attr("role_category"),
        "gender": k_attr("gender"),
        "domain": k_attr("domain"),
        "interpersonal": k_attr("interpersonal"),
        "in_domain": in_domain_col.reshape(-1),
        "correct": correct.reshape(-1),
        "pred": pred.reshape(-1),
        "answer": np.repeat(answer, n_k),
        "n_choices": 4,
        "split": np.repeat(split, n_k),
        "prompt": prompt,
        "p_true": np.column_stack([p_control, p]).reshape(-1),
    })

    # Truth, in the analysis's terms (means over the questions drawn).
    personas["true_delta"] = (p - p_control[:, None]).mean(axis=0)
    is_dom = personas["domain"].notna().to_numpy()
    d_true = p - p_control[:, None]
    in_mean = d_true[:, is_dom][in_dom[:, is_dom]].mean() if in_dom.any() else float("nan")
    out_mean = d_true[:, is_dom][~in_dom[:, is_dom]].mean() if is_dom.any() else float("nan")
    gendered = personas["gender"].isin(["female", "male"])
    ip = personas["interpersonal"].astype("boolean")
    contrasts = {"persona - control": float(personas["true_delta"].mean())}
    t_means = _level_means(personas, "template")
    for i, a in enumerate(templates):
        for b in templates[i + 1:]:
            contrasts[f"template: {b} - {a}"] = t_means[b] - t_means[a]
    if (personas["gender"] == "neutral").any() and gendered.any():
        contrasts["gender: neutral - gendered"] = float(personas.loc[personas["gender"] == "neutral", "true_delta"].mean()
                                                        - personas.loc[gendered, "true_delta"].mean())
    if ip.any() and (~ip).any():
        contrasts["interpersonal: interpersonal - non-interpersonal"] = float(
            personas.loc[ip.fillna(False), "true_delta"].mean() - personas.loc[~ip.fillna(True), "true_delta"].mean())
    truth = {
        "effects": effects,
        "personas": personas[["template", "role", "role_category", "gender", "domain", "interpersonal", "true_delta"]],
        "groups": {by: _level_means(personas, by) for by in ("template", "role_category", "gender", "domain",
                                                                 "interpersonal")},
        "contrasts": contrasts,
        "domain_match": {"in_domain": float(in_mean), "out_of_domain": float(out_mean),
                         "difference": float(in_mean - out_mean)},
        "control_accuracy": float(p_control.mean()),
        "clipped_share": float((raw != p).mean()),
    }
    return df, truth


def outcome_matrix(offsets, n_questions: int = 1200, seed: int = 0, rho: float = 0.8,
                   p_range: tuple[float, float] = (0.15, 0.85), beta: tuple[float, float] = (1.2, 1.0),
                   n_subjects: int = 57, template="speaker"):
    """The generative model of make_predictions straight into a matrix.PersonaMatrix (no predictions table: fast
    enough to simulate a statistic over hundreds of seeds): K personas `template`/r0..r{K-1} (`template`: one
    name, or one per persona) with additive offsets `offsets` (K), the 60/20/20 split drawn per question, n_subjects subjects s0.. . Returns (matrix, p):
    p is the Q x (1 + K) array of true probabilities of a correct answer, column 0 the control's."""
    from persona_bench.analysis.matrix import NONE

    off = np.asarray(offsets, dtype=float)
    rng = np.random.default_rng(seed)
    k = len(off)
    p_control = p_range[0] + (p_range[1] - p_range[0]) * rng.beta(*beta, size=n_questions)
    p = np.clip(np.column_stack([p_control, p_control[:, None] + off[None, :]]), 0.001, 0.999)
    latent = np.sqrt(rho) * rng.standard_normal((n_questions, 1)) + np.sqrt(1 - rho) * rng.standard_normal(p.shape)
    correct = latent < stats.norm.ppf(p)
    answer = rng.integers(0, 4, size=n_questions)
    pred = np.where(correct, answer[:, None], (answer[:, None] + rng.integers(1, 4, size=p.shape)) % 4)
    personas = pd.DataFrame({"template": template, "role": [f"r{i}" for i in range(k)], "role_category": NONE,
                             "gender": NONE, "domain": NONE, "interpersonal": NONE, "domain_role": False})
    g = PersonaMatrix(
        questions=np.array([f"q{i:06d}" for i in range(n_questions)]),
        subjects=np.array([f"s{i}" for i in rng.integers(0, n_subjects, size=n_questions)]),
        answers=answer.astype(float), split=rng.choice(np.array(["train", "val", "test"]), size=n_questions,
                                                      p=[0.6, 0.2, 0.2]),
        split_from_hash=0, control=correct[:, 0].astype(float), control_pred=pred[:, 0].astype(float),
        personas=personas, correct=correct[:, 1:].astype(float), pred=pred[:, 1:].astype(float),
        in_domain=np.zeros((n_questions, k), dtype=bool))
    return g, p


def make_matrix(roles: pd.DataFrame, n_questions: int = 300, templates: tuple[str, ...] = ("speaker", "audience"),
                effects: Optional[PlantedEffects] = None, seed: int = 0,
                domains: Optional[dict[str, list[str]]] = None, rho: float = 0.8) -> PersonaMatrix:
    """The same synthetic model as make_predictions (same seed, same outcomes), straight into the question x persona
    matrix the analysis works on, without the predictions table: for calibration loops over hundreds of seeds and
    for timing at the paper's size. The matrix's questions are in draw order."""
    d = _draw(roles, n_questions, templates, effects, seed, domains, rho)
    order = np.lexsort((d.personas["role"].to_numpy(str), d.personas["template"].to_numpy(str)))  # as the matrix sorts
    personas = d.personas.iloc[order].reset_index(drop=True)
    out = personas[["template", "role", *ATTRIBUTES]].copy()
    out["domain_role"] = personas["domain"].notna().to_numpy()
    for col in ATTRIBUTES:
        out[col] = level_labels(out[col], col)
    correct = d.correct.astype(float)
    return PersonaMatrix(
        questions=d.q_id, subjects=d.q_subject.astype(str), answers=d.answer.astype(float), split=d.split,
        split_from_hash=0, control=correct[:, 0], control_pred=np.full(n_questions, np.nan), personas=out,
        correct=correct[:, 1:][:, order], pred=np.full((n_questions, len(out)), np.nan),
        in_domain=d.in_dom[:, order])
