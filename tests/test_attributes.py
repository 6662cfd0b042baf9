"""The attribute model (persona_bench.analysis.attributes) on synthetic matrices that plant structure, not only
effects: the paper's 162 roles x 2 templates, 80 questions per dataset, role offsets of sd 0.02 shared by a role's
templates (roles are a sample), simulated straight into the question x persona matrix (synthetic.make_matrix).

STRUCTURE: N_SEEDS datasets with a template effect (audience +0.03) and an effect on one role category only
(family -0.03); no gender, interpersonal, domain or other category effect. 19 of the 26 gendered roles are family
roles, so the raw neutral - gendered difference is about +0.02 in every dataset.
SUBJECT: N_SEEDS datasets with no attribute effect at all and every persona 0.08 weaker than control on every
subject of an expertise domain: the raw in-domain minus out-of-domain difference is negative on average (in-domain
pairs all lie on weak subjects, out-of-domain pairs partly not); question intercepts absorb the weakness.

Measured here (seeds 5000-5299, 300 datasets per scenario, 80 questions; 2026-11-30; `-s` prints the tables):
  STRUCTURE, rejection at 5% of the null terms: gender female 0.020, male 0.020, interpersonal 0.053, role_category
  ai 0.057, romantic 0.047, school 0.050, social 0.033, work 0.027, domain_role 0.030, domain_match 0.063;
  coverage of the planted template effect 0.943, of the family effect 0.960, of every term 0.937-0.980.
  SUBJECT: domain_match 0.067, template 0.067, every other term 0.023-0.053; coverage 0.933-0.977.
The same scenarios over 1,000 seeds at 150 questions (docs/statistics.md, "Attribute effects"): every null term
0.023-0.055, coverage 0.939-0.977. A rate's standard error at 300 seeds is 0.013. The file takes about 40 s on
2 shared cores (about 20 s of CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from persona_bench.analysis import regression
from persona_bench.analysis.attributes import attribute_effects, collinearity
from persona_bench.analysis.matrix import PersonaMatrix
from persona_bench.analysis.synthetic import PlantedEffects, make_matrix, make_predictions, roles_frame

PAPER = Path(__file__).resolve().parents[1] / "conf" / "role_set" / "paper.yaml"
N_SEEDS = 300
N_QUESTIONS = 80
MAX_FPR = 0.08
MIN_COVERAGE = 0.93
STRUCTURE = PlantedEffects(template={"speaker": 0.0, "audience": 0.03}, gender={}, role={},
                           category={"family": -0.03}, role_sd=0.02)
STRUCTURE_TRUTH = {"template=audience": 0.03, "role_category=family": -0.03}
WEAKNESS = -0.08  # every persona against control on each subject of an expertise domain (SUBJECT)


@pytest.fixture(scope="module")
def paper():
    return roles_frame(PAPER)


def simulate(roles, domains, effects, extra=None) -> pd.DataFrame:
    """The estimates of N_SEEDS datasets in one table (seed column), plus `extra(grid)` per seed as columns."""
    out = []
    with threadpool_limits(1):  # small matrices: one BLAS thread is faster than two fighting over 2 cores
        for s in range(N_SEEDS):
            g = make_matrix(roles, N_QUESTIONS, effects=effects, seed=5000 + s, domains=domains)
            est = attribute_effects(grid=g)["estimates"].assign(seed=s)
            if extra is not None:
                est = est.assign(**extra(g))
            out.append(est)
    return pd.concat(out, ignore_index=True)


def rates(est: pd.DataFrame, truth: dict) -> pd.DataFrame:
    t = est.assign(truth=est["term"].map(truth).fillna(0.0))
    t["reject"] = t["p"] < 0.05
    t["cover"] = (t["ci_low"] <= t["truth"]) & (t["truth"] <= t["ci_high"])
    table = t.groupby("term").agg(reject=("reject", "mean"), cover=("cover", "mean"), truth=("truth", "first"),
                                  mean=("estimate", "mean"), sd=("estimate", "std"), se=("se", "mean"),
                                  df=("df", "median"))
    print(table.round(4).to_string())
    return table


def raw_neutral_minus_gendered(g: PersonaMatrix) -> dict:
    mean = np.nanmean(g.correct, axis=0)
    gender = g.personas["gender"].to_numpy()
    return {"raw": mean[gender == "neutral"].mean() - mean[np.isin(gender, ["female", "male"])].mean()}


def raw_domain_difference(g: PersonaMatrix) -> dict:
    """effects.domain_match's point estimate: in-domain pairs minus out-of-domain pairs of domain roles, each
    against control, over different questions."""
    d = g.diff[:, g.personas["domain_role"].to_numpy(bool)]
    inn = g.in_domain[:, g.personas["domain_role"].to_numpy(bool)]
    return {"raw": d[inn].mean() - d[~inn].mean()}


@pytest.fixture(scope="module")
def structure(paper):
    return simulate(*paper, STRUCTURE, raw_neutral_minus_gendered)


@pytest.fixture(scope="module")
def subject(paper):
    roles, domains = paper
    weak = PlantedEffects(template={}, gender={}, role={}, role_sd=0.02,
                          subject={s: WEAKNESS for subjects in domains.values() for s in subjects})
    return simulate(roles, domains, weak, raw_domain_difference)


def test_a_category_effect_is_no_gender_or_interpersonal_effect(structure):
    """(a) The raw neutral - gendered difference is confounded with the family category; the adjusted gender and
    interpersonal terms reject at about the nominal rate."""
    assert structure.groupby("seed")["raw"].first().mean() > 0.01  # the confound the raw contrast shows
    table = rates(structure, STRUCTURE_TRUTH)
    for term in ("gender=female", "gender=male", "interpersonal=interpersonal"):
        assert table.loc[term, "reject"] <= MAX_FPR, term


def test_b_role_offsets_keep_every_null_attribute_term_near_nominal(structure, subject):
    """(b) Role offsets (sd 0.02) and no effect on the term: every null term of both scenarios rejects at most
    MAX_FPR of the time (roles, not prompts, are the unit of the attribute terms)."""
    for est, truth in ((structure, STRUCTURE_TRUTH), (subject, {})):
        table = rates(est, truth)
        null = table[table["truth"] == 0]
        assert len(null) >= 9
        assert (null["reject"] <= MAX_FPR).all(), null[null["reject"] > MAX_FPR]


def test_c_a_subject_wide_weakness_is_no_domain_effect(subject):
    """(c) Every persona weaker on the subjects that have expert roles: the raw in-domain difference is negative
    (in-domain pairs all lie on weak subjects, out-of-domain pairs partly not), the model's domain match (within
    question, within persona) stays null."""
    raw = subject.groupby("seed")["raw"].first()
    assert raw.mean() < -0.01 and (raw < 0).mean() > 0.6
    table = rates(subject, {})
    assert table.loc["domain_match=in-domain", "reject"] <= MAX_FPR
    assert abs(table.loc["domain_match=in-domain", "mean"]) < 0.005


def test_d_intervals_cover_planted_template_and_category_effects(structure):
    """(d) 95% intervals cover the planted template and category effects at least MIN_COVERAGE of the time (and
    every null term's zero at least 0.92: 300 seeds give a coverage a standard error of 0.013)."""
    table = rates(structure, STRUCTURE_TRUTH)
    assert table.loc["template=audience", "cover"] >= MIN_COVERAGE
    assert table.loc["role_category=family", "cover"] >= MIN_COVERAGE
    assert (table["cover"] >= 0.92).all(), table[table["cover"] < 0.92]
    assert abs(table.loc["role_category=family", "mean"] + 0.03) < 0.005  # unbiased


def test_e_aliased_terms_are_dropped_by_name(paper):
    """(e) In the paper's role list gender=unknown is exactly non-interpersonal: dropped and named, never an
    estimate with se 0. A design where domain roles are exactly the AI roles drops domain_role by name."""
    roles, domains = paper
    g = make_matrix(roles, 60, effects=PlantedEffects(), seed=1, domains=domains)
    res = attribute_effects(grid=g)
    est = res["estimates"]
    assert "gender=unknown" in res["dropped_terms"] and "gender=unknown" not in set(est["term"])
    assert any("gender=unknown" in d and "interpersonal" in d for d in res["dropped"])
    assert (est["se"] > 1e-4).all() and (est["se"] < 0.5).all()
    small = roles[roles["category"].isin(["ai", "occupation", "family"])].copy()
    small["domain"] = np.where(small["category"] == "ai", "medicine", None)
    res = attribute_effects(grid=make_matrix(small, 60, seed=2, domains=domains))
    assert "domain_role=domain role" in res["dropped_terms"]
    assert any(d.startswith("domain_role=domain role is determined by role_category=ai") for d in res["dropped"])
    assert (res["estimates"]["se"] > 1e-4).all()
    assert any("domain_role=domain role" in w for w in res["warnings"])


def test_regression_drops_an_aliased_term_by_name(paper):
    """The question-clustered regression's rank check (QR with a tolerance): gender=female exactly the family
    roles -> dropped and named; no standard error of 0 or in the hundreds."""
    roles, domains = paper
    small = roles[roles["category"].isin(["family", "occupation", "work"])].copy()
    small["gender"] = np.where(small["category"] == "family", "female", "unknown")
    df, _ = make_predictions(small, 80, seed=4, domains=domains)
    res = regression.factor_regression(df)
    assert any(d.startswith("gender=female is determined by role_category=family") for d in res["dropped"])
    se = res["coefficients"]["se"]
    assert "gender=female" not in set(res["coefficients"]["term"])
    assert (se > 1e-4).all() and (se < 1).all()
    assert res["title"].startswith("Regression: question fixed effects")


def test_collinearity_table_and_warnings_on_the_paper_roles(paper):
    roles, domains = paper
    g = make_matrix(roles, 40, seed=3, domains=domains)
    table, warnings = collinearity(g.personas)
    row = table.set_index(["factor", "level"]).loc[("gender", "female")]
    assert row["n_roles"] == 15 and row["n_personas"] == 30 and row["main_category"] == "11 of 15 family"
    fam = table.set_index(["factor", "level"]).loc[("role_category", "family")]
    assert fam["vif"] > 5 and "VIF" in fam["warning"]
    assert any(w.startswith("role_category=family") for w in warnings)
    res = attribute_effects(grid=g)
    assert any(w.startswith("gender=female") and "degrees of freedom" in w for w in res["warnings"])


def test_attribute_effects_from_the_predictions_table(paper):
    """The table path and the matrix path give the same fit; the estimates carry raw p and no flag."""
    roles, domains = paper
    effects = PlantedEffects(template={"speaker": 0.0, "audience": 0.05}, role_sd=0.01)
    df, _ = make_predictions(roles[:40], 120, effects=effects, seed=5, domains=domains)
    a = attribute_effects(df)["estimates"]
    b = attribute_effects(grid=make_matrix(roles[:40], 120, effects=effects, seed=5, domains=domains))["estimates"]
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["term", "factor", "level", "reference", "estimate", "se", "df", "ci_low", "ci_high",
                               "p", "n_roles", "n_personas"]
