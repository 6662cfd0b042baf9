"""Planted-effect tests of persona_bench.analysis on synthetic predictions (persona_bench.analysis.synthetic).

Recovery: one dataset of 1,000 questions x the 162 paper roles x 2 templates (325,000 rows) with planted
template, gender, single-role and domain-match effects: every sign recovered, every true value inside its 95%
interval, the single-role effects significant after Holm.

Calibration: N_SEEDS datasets of 300 questions x 42 roles x 2 templates with no persona effect at all (null)
and N_SEEDS with a template effect of +/-0.025 (so the audience-speaker contrast is 0.05 while persona vs
control, categories, genders and domain match stay null). Measured with N_SEEDS = 60 (seeds 1000-1059 and
2000-2059; python -m pytest tests/test_analysis.py -s prints them):
  rejection rates at 5% of the null tests: persona - control 0.033, neutral - gendered 0.083, female - male
  0.117, interpersonal 0.050, domain match 0.067, regression role_category=family 0.050, group delta of
  category "family" 0.033 (mean 0.062); any persona significant after Holm (family-wise) 0.017; unadjusted
  exact McNemar per persona 0.035 (the exact test is conservative); the planted 0.05 template contrast is
  found in 60/60;
  interval coverage of the true value: 0.883-0.967 for the quantities above (mean 0.93), persona intervals 0.956.
With 60 seeds a rate's standard error is 0.028. A separate run of 400 null seeds (contrasts and every
regression coefficient, 300 questions, 42 roles) gave rejection rates 0.025-0.075 (female - male 0.050,
neutral - gendered 0.035) and coverage 0.925-0.975. The whole file takes about 55 s on 2 shared cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from persona_bench.analysis import effects as A
from persona_bench.analysis.matrix import PersonaMatrix
from persona_bench.analysis.synthetic import (
    PlantedEffects,
    make_predictions,
    roles_frame,
)

PAPER = Path(__file__).resolve().parents[1] / "conf" / "role_set" / "paper.yaml"
N_SEEDS = 60
N_BOOT = 500  # bootstrap resamples in the calibration loop (2,000 elsewhere)
ROLE_EFFECTS = {"doctor": 0.08, "mathematician": 0.08, "janitor": -0.08, "enemy": -0.08}


def inside(row, truth) -> bool:
    return row["ci_low"] <= truth <= row["ci_high"]


@pytest.fixture(scope="module")
def paper_roles():
    return roles_frame(PAPER)


@pytest.fixture(scope="module")
def planted(paper_roles):
    roles, domains = paper_roles
    effects = PlantedEffects(template={"speaker": 0.0, "audience": 0.05}, gender={"neutral": 0.03},
                             role=ROLE_EFFECTS, in_domain=0.04)
    df, truth = make_predictions(roles, n_questions=1000, effects=effects, seed=7, domains=domains)
    return df, truth, A.analyse(df, n_boot=2000, seed=0, n_splits=100)


# ------------------------------------------------------------------------------------------- synthetic
def test_synthetic_rows_follow_the_schema(planted, paper_roles):
    df, truth, _ = planted
    assert len(df) == 1000 * (2 * 162 + 1)
    per_q = df.groupby("question_id")["template"].apply(lambda t: (t == "control").sum())
    assert (per_q == 1).all()
    assert df["question_id"].str.fullmatch(r"[a-z_]+/[0-9a-f]{16}").all()
    assert (df["question_id"].str.split("/").str[0] == df["subject"]).all()
    assert set(df["split"]) == {"train", "val", "test"}
    assert 0.5 < (df["split"] == "train").mean() < 0.7
    assert ((df["pred"] == df["answer"]) == df["correct"]).all()
    ctrl = df[df["template"] == "control"]
    assert ctrl[["role", "role_category", "gender", "in_domain"]].isna().all().all()
    doctor = df[(df["role"] == "doctor")]
    assert (doctor["in_domain"] == doctor["subject"].isin(paper_roles[1]["medicine"])).all()
    assert truth["clipped_share"] < 0.001
    # Questions carry most of the variance of correctness.
    between = df.groupby("question_id")["correct"].mean().var()
    assert between / df["correct"].var() > 0.5


# -------------------------------------------------------------------------------------------- recovery
def test_template_and_gender_contrasts_recovered(planted):
    _, truth, res = planted
    ct = res["contrasts"].set_index("contrast")
    for name in ("template: audience - speaker", "gender: neutral - gendered"):
        row = ct.loc[name]
        assert inside(row, truth["contrasts"][name]), (name, row.to_dict(), truth["contrasts"][name])
        assert row["estimate"] > 0 and row["p"] < 0.001
    assert inside(ct.loc["persona - control"], truth["contrasts"]["persona - control"])
    assert inside(ct.loc["interpersonal: interpersonal - non-interpersonal"],
                  truth["contrasts"]["interpersonal: interpersonal - non-interpersonal"])


def test_group_effects_cover_the_truth(planted):
    _, truth, res = planted
    for by in ("template", "gender", "role_category", "domain", "interpersonal"):
        tab = res["groups"][by].set_index("level")
        assert set(tab.index) == set(truth["groups"][by])
        for level, true in truth["groups"][by].items():
            assert inside(tab.loc[level], true), (by, level, tab.loc[level].to_dict(), true)


def test_single_role_effects_significant_after_holm(planted):
    _, truth, res = planted
    pe = res["persona_effects"].merge(truth["personas"][["template", "role", "true_delta"]], on=["template", "role"])
    strong = pe[pe["role"].isin(list(ROLE_EFFECTS)) & (pe["true_delta"].abs() >= 0.08)]
    assert len(strong) >= 4
    assert strong["significant"].all(), strong[["template", "role", "delta", "p_holm"]]
    assert (np.sign(strong["delta"]) == np.sign(strong["true_delta"])).all()
    assert (strong["direction"] == np.where(strong["true_delta"] > 0, "better", "worse")).all()
    coverage = ((pe["ci_low"] <= pe["true_delta"]) & (pe["true_delta"] <= pe["ci_high"])).mean()
    assert coverage >= 0.9, coverage
    # Speaker personas with no planted effect: Holm keeps the family-wise error at 5%.
    null = pe[(pe["true_delta"] == 0)]
    assert len(null) > 80 and null["significant"].sum() <= 1


def test_domain_match_recovered(planted):
    _, truth, res = planted
    dm = res["domain_match"]
    assert dm["n_roles"] == 48 and dm["n_pairs_in"] > 1000
    assert dm["ci_low"] <= truth["domain_match"]["difference"] <= dm["ci_high"]
    assert dm["difference"] > 0 and dm["p"] < 0.001
    for part in ("in_domain", "out_of_domain"):
        assert dm[part]["ci_low"] <= truth["domain_match"][part] <= dm[part]["ci_high"]


def test_regression_recovers_the_noiseless_coefficients(planted):
    df, _, res = planted
    reg = res["regression"]
    assert reg["converged"] and reg["n_obs"] == 1000 * 324 and reg["n_questions"] == 1000
    assert "question_id" in reg["specification"] and "cluster-robust" in reg["specification"]
    true = A.regression(df, outcome="p_true")["coefficients"].set_index("term")["estimate"]
    coef = reg["coefficients"].set_index("term")
    assert set(coef.index) == set(true.index)
    for term in coef.index:
        assert inside(coef.loc[term], true[term]), (term, coef.loc[term].to_dict(), true[term])
    for term, planted_value in (("template=audience", 0.05), ("gender=neutral", 0.03), ("domain_match=in-domain", 0.04)):
        assert coef.loc[term, "p"] < 0.001 and abs(true[term] - planted_value) < 0.01
    assert coef.loc["template=audience", "reference"] == "speaker"


def test_randomness_and_split_halves(planted):
    _, _, res = planted
    r = res["randomness"]
    assert 0 < r["share_questions_personas_disagree"] < 1
    assert r["share_questions_all_agree_with_control"] + r["share_questions_some_persona_flips_control"] == pytest.approx(1)
    # The best persona on half A (a planted +0.13 persona) stays above control on half B.
    assert r["share_best_above_control_on_b"] > 0.95
    assert r["mean_delta_b_best"] > r["mean_delta_b_all"]
    assert r["mean_delta_a_best"] >= r["mean_delta_b_best"]  # selection on A is optimistic


# --------------------------------------------------------------------------------------- calibration
def _small_roles(roles):
    return roles.groupby("category", sort=False).head(6).reset_index(drop=True)


@pytest.fixture(scope="module")
def calibration(paper_roles):
    roles, domains = paper_roles
    roles = _small_roles(roles)
    keys = ["persona - control", "gender: neutral - gendered", "gender: female - male",
            "interpersonal: interpersonal - non-interpersonal", "domain match", "regression family",
            "group family"]
    reject = {k: [] for k in keys + ["holm any", "template contrast"]}
    cover = {k: [] for k in keys + ["template contrast", "personas"]}
    raw = []
    for i in range(N_SEEDS):
        null = PlantedEffects(template={}, gender={}, role={})
        df, truth = make_predictions(roles, 300, effects=null, seed=1000 + i, domains=domains)
        g = PersonaMatrix.from_predictions(df)
        pe = A.persona_effects(df, n_boot=N_BOOT, seed=i, grid=g)
        ct = A.contrasts(df, n_boot=N_BOOT, seed=i, grid=g).set_index("contrast")
        dm = A.domain_match(df, n_boot=N_BOOT, seed=i, grid=g)
        reg = A.regression(df, grid=g)["coefficients"].set_index("term").loc["role_category=family"]
        grp = A.group_effects(df, "role_category", n_boot=N_BOOT, seed=i, grid=g).set_index("level").loc["family"]
        rows = {k: ct.loc[k] for k in keys[:4]}
        rows.update({"domain match": {"p": dm["p"], "ci_low": dm["ci_low"], "ci_high": dm["ci_high"]},
                     "regression family": reg, "group family": grp})
        for k, row in rows.items():
            reject[k].append(row["p"] < 0.05)
            cover[k].append(row["ci_low"] <= 0 <= row["ci_high"])
        reject["holm any"].append(bool(pe["significant"].any()))
        raw.extend(pe["p"] < 0.05)
        # Template effect +/-0.025: a true 0.05 contrast; persona intervals against their true +/-0.025.
        shift = PlantedEffects(template={"speaker": -0.025, "audience": 0.025}, gender={}, role={})
        df, truth = make_predictions(roles, 300, effects=shift, seed=2000 + i, domains=domains)
        g = PersonaMatrix.from_predictions(df)
        row = A.contrasts(df, n_boot=N_BOOT, seed=i, grid=g).set_index("contrast").loc["template: audience - speaker"]
        reject["template contrast"].append(row["p"] < 0.05)
        cover["template contrast"].append(inside(row, truth["contrasts"]["template: audience - speaker"]))
        pe = A.persona_effects(df, n_boot=N_BOOT, seed=i, grid=g).merge(truth["personas"], on=["template", "role"])
        cover["personas"].extend((pe["ci_low"] <= pe["true_delta"]) & (pe["true_delta"] <= pe["ci_high"]))
    rates = {k: float(np.mean(v)) for k, v in reject.items()}
    coverage = {k: float(np.mean(v)) for k, v in cover.items()}
    print(f"\n{N_SEEDS} seeds; rejection rates at 5%: {json.dumps(rates)}; unadjusted persona McNemar: "
          f"{np.mean(raw):.3f}; coverage: {json.dumps(coverage)}")
    return rates, coverage, float(np.mean(raw))


def test_null_effects_rejected_at_most_at_the_nominal_rate(calibration):
    rates, _, raw = calibration
    nulls = {k: v for k, v in rates.items() if k != "template contrast"}
    # Binomial bound on a 5% rate over N_SEEDS seeds, Bonferroni over the checks: a correct analysis fails
    # this test with probability under 1%.
    bound = stats.binom.ppf(1 - 0.01 / len(nulls), N_SEEDS, 0.05) / N_SEEDS
    for key, rate in nulls.items():
        assert rate <= bound, (key, rate, bound)
    assert np.mean(list(nulls.values())) <= 0.075  # pooled over the checks
    assert raw <= 0.06  # unadjusted per-persona McNemar (conservative: exact test)
    assert rates["template contrast"] > 0.8  # and the planted 0.05 contrast is found


def test_intervals_cover_the_truth_over_seeds(calibration):
    _, coverage, _ = calibration
    low = stats.binom.ppf(0.01 / len(coverage), N_SEEDS, 0.95) / N_SEEDS  # as above, for 95% coverage
    for key, share in coverage.items():
        assert share >= low, (key, share, low)
    assert np.mean(list(coverage.values())) >= 0.92  # pooled
    assert coverage["personas"] >= 0.92  # 84 personas x N_SEEDS intervals


# ------------------------------------------------------------------------------------ the bootstrap
def test_vectorised_bootstrap_equals_a_loop():
    rng = np.random.default_rng(0)
    d = rng.integers(-1, 2, size=(50, 3)).astype(float)
    d[3, 1] = np.nan
    w = A.boot_weights(50, 20, seed=5)
    assert (w.sum(axis=1) == 50).all()
    fast = A.boot_means(d, w)
    idx = [np.repeat(np.arange(50), w[b].astype(int)) for b in range(20)]
    slow = np.array([[np.nanmean(d[i, j]) for j in range(3)] for i in idx])
    np.testing.assert_allclose(fast, slow, rtol=1e-6)


# ------------------------------------------------------------------------------------------ edge cases
@pytest.fixture(scope="module")
def small(paper_roles):
    roles, domains = paper_roles
    return make_predictions(_small_roles(roles), 120, seed=3, domains=domains)[0]


def test_no_control_rows_or_several_models_raise(small):
    with pytest.raises(ValueError, match="no control rows"):
        A.analyse(small[small["template"] != "control"], n_boot=50)
    two = pd.concat([small, small.assign(model="other")])
    with pytest.raises(ValueError, match="2 models"):
        A.analyse(two, n_boot=50)


def test_one_template_only(small):
    res = A.analyse(small[small["template"].isin(["control", "speaker"])], n_boot=100)
    assert not res["contrasts"]["factor"].eq("template").any()
    assert any(d.startswith("template") for d in res["regression"]["dropped"])
    assert "template=audience" not in set(res["regression"]["coefficients"]["term"])
    assert len(res["groups"]["template"]) == 1


def test_roles_without_attributes(small):
    bare = small.drop(columns=["gender", "domain", "in_domain"]).assign(role_category=None)
    res = A.analyse(bare, n_boot=100)
    assert list(res["groups"]["gender"]["level"]) == ["(none)"]
    assert list(res["groups"]["role_category"]["level"]) == ["(none)"]
    assert res["domain_match"]["n_roles"] == 0 and np.isnan(res["domain_match"]["difference"])
    assert set(res["regression"]["coefficients"]["factor"]) <= {"template"}


def test_tiny_data_runs_and_is_json_ready(paper_roles):
    roles, domains = paper_roles
    df = make_predictions(roles.head(3), 6, seed=1, domains=domains)[0]
    res = A.analyse(df, n_boot=200)
    assert len(res["persona_effects"]) == 6 and (res["persona_effects"]["n_questions"] == 6).all()
    text = json.dumps(A.to_records(res), allow_nan=False)
    assert '"persona_effects"' in text


def test_object_dtype_booleans_give_the_same_answers(small):
    obj = small.assign(correct=small["correct"].map({True: "True", False: "False"}).astype(object),
                       interpersonal=small["interpersonal"].astype(object),
                       in_domain=small["in_domain"].astype(object))
    a, b = A.analyse(small, n_boot=200), A.analyse(obj, n_boot=200)
    pd.testing.assert_frame_equal(a["persona_effects"], b["persona_effects"])
    assert a["domain_match"] == b["domain_match"]


def test_missing_answers_use_the_questions_each_persona_has(small):
    ctrl = small[small["template"] == "control"]
    drop_q = ctrl["question_id"].iloc[:30]
    cut = small[~((small["role"] == "psychologist") & (small["template"] == "speaker") & small["question_id"].isin(drop_q))]
    pe = A.persona_effects(cut, n_boot=200).set_index(["template", "role"])
    row = pe.loc[("speaker", "psychologist")]
    kept = cut[(cut["role"] == "psychologist") & (cut["template"] == "speaker")]
    assert row["n_questions"] == 90
    assert row["accuracy"] == pytest.approx(kept["correct"].mean())
    assert row["control_accuracy"] == pytest.approx(ctrl[ctrl["question_id"].isin(kept["question_id"])]["correct"].mean())


def test_mcnemar_counts_and_holm(small):
    pe = A.persona_effects(small, n_boot=100)
    row = pe.iloc[0]
    assert row["p"] == pytest.approx(stats.binomtest(int(row["n_better"]), int(row["n_better"] + row["n_worse"])).pvalue)
    assert (pe["p_holm"] >= pe["p"]).all() and (pe["q_bh"] >= pe["p"] - 1e-12).all()
    assert (pe["significant"] == (pe["p_holm"] < 0.05)).all()


# ------------------------------------------------------------------------------------------ across models
def test_rank_agreement_and_side_by_side(paper_roles):
    roles, domains = paper_roles
    effects = PlantedEffects(role={r: 0.2 * (i % 2 - 0.5) for i, r in enumerate(roles["name"][:60])})
    m1 = make_predictions(roles, 300, effects=effects, seed=11, domains=domains, model="m1")[0]
    m2 = make_predictions(roles, 300, effects=effects, seed=12, domains=domains, model="m2")[0]
    null = make_predictions(roles, 300, effects=PlantedEffects(template={}, gender={}, role={}), seed=13,
                            domains=domains, model="m3")[0]
    ra = A.rank_agreement({"m1": m1, "m2": m2, "m3": null}).set_index(["model_a", "model_b"])
    assert ra.loc[("m1", "m2"), "n_roles"] == 162
    assert ra.loc[("m1", "m2"), "spearman"] > 0.3 and ra.loc[("m1", "m2"), "p"] < 0.001
    assert ra.loc[("m1", "m2"), "ci_low"] < ra.loc[("m1", "m2"), "spearman"] < ra.loc[("m1", "m2"), "ci_high"]
    assert ra.loc[("m1", "m3"), "ci_low"] < 0.3
    sbs = A.side_by_side({"m1": m1, "m3": null}, n_boot=300).set_index("model")
    assert list(sbs.index) == ["m1", "m3"]
    assert sbs.loc["m1", "n_personas"] == 324
    assert sbs.loc["m1", "share_significant"] > sbs.loc["m3", "share_significant"]
    assert sbs.loc["m1", "best_delta"] == pytest.approx(
        A.persona_effects(m1, n_boot=10)["delta"].max())
