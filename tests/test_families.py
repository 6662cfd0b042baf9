"""One declared family of tests per report (analysis/families.py) and the equivalence tests
(analysis/equivalence.py): corrected p-values decide "significant", under a pure null the share of reports with
any significant flag in a family stays at the family's level, and TOST says "no effect larger than 1 point" only
where the data support it. The statistics are simulated (matrices and counts), not the models.

Measured (2026-11-30; the seeds of the tests): see NULL_FIGURES below and docs/statistics.md.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import CONF
from scipy import stats

from persona_bench.analysis import effects, families
from persona_bench.analysis.equivalence import paired_se, tost_p, verdicts
from persona_bench.analysis.stats import mcnemar_p, ttest_p
from persona_bench.analysis.synthetic import PlantedEffects, make_matrix, make_predictions, roles_frame

ALPHA = 0.05
NO_EFFECTS = PlantedEffects(template={}, gender={}, category={}, role={})
ROLES = ["doctor", "lawyer", "mathematician", "janitor", "enemy", "mother", "father", "sister", "friend", "teacher",
         "economist", "psychologist", "historian", "physicist", "software engineer", "nurse", "judge", "partner",
         "coworker", "student", "AI language model", "chatbot", "painter", "farmer"]


def upper(alpha: float, n: int) -> float:
    """One-sided 99% Monte Carlo bound of a share whose true value is alpha, over n simulated reports."""
    return alpha + 2.33 * np.sqrt(alpha * (1 - alpha) / n)


def test_adjust_matches_statsmodels_and_works_per_row():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for _ in range(20):  # statsmodels runs gc.collect() on every call: few
        p = rng.random(rng.integers(1, 40)) ** rng.uniform(0.3, 4)
        p[rng.integers(0, len(p))] = p[0]  # ties
        for method in ("holm", "fdr_bh"):
            np.testing.assert_allclose(families.adjust(p, method), multipletests(p, method=method)[1])
    rows = np.array([[0.01, np.nan, 0.04], [0.5, 0.001, np.nan]])
    np.testing.assert_allclose(families.adjust(rows, "holm"), [[0.02, np.nan, 0.04], [0.5, 0.002, np.nan]])
    with pytest.raises(ValueError):
        families.adjust(rows, "bonferroni-ish")


def null_outcomes(rng, seeds: int, n_q: int, k: int, rho: float = 0.8) -> np.ndarray:
    """seeds x questions x (control + k personas) correctness with no persona effect at all: the Gaussian copula
    of analysis.synthetic (personas and control agree on most questions; their tests are positively dependent)."""
    p = 0.15 + 0.7 * rng.beta(1.2, 1.0, size=(seeds, n_q, 1))
    latent = np.sqrt(rho) * rng.standard_normal((seeds, n_q, 1)) + np.sqrt(1 - rho) * rng.standard_normal(
        (seeds, n_q, 1 + k))
    return latent < stats.norm.ppf(p)


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_under_a_pure_null_few_reports_flag_a_persona(method):
    """2,000 simulated reports of 32 personas on 300 questions: exact McNemar per persona, corrected per report."""
    seeds, k = 2000, 32
    y = null_outcomes(np.random.default_rng(10), seeds, 300, k)
    ctrl, pers = y[..., :1], y[..., 1:]
    p = mcnemar_p((pers & ~ctrl).sum(axis=1), (~pers & ctrl).sum(axis=1))  # seeds x k
    any_sig = (families.adjust(p, method) < ALPHA).any(axis=1)
    raw_any = (p < ALPHA).any(axis=1)
    assert any_sig.mean() <= upper(ALPHA, seeds), any_sig.mean()
    assert raw_any.mean() > 0.3  # what uncorrected p-values would have claimed


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_under_a_pure_null_few_reports_flag_a_group_contrast(method):
    """The t-test families (contrasts, factor levels): 10 overlapping groups of personas against the control
    (or one another) per report, tests dependent through shared questions and personas."""
    seeds, k = 1000, 16
    y = null_outcomes(np.random.default_rng(11), seeds, 200, k).astype(float)
    ctrl, pers = y[..., 0], y[..., 1:]
    groups = [np.arange(k), np.arange(0, k, 2), np.arange(1, k, 2), np.arange(8), np.arange(8, 16), np.arange(4)]
    diffs = [pers[..., g].mean(axis=-1) - ctrl for g in groups]
    diffs += [pers[..., groups[1]].mean(-1) - pers[..., groups[2]].mean(-1), pers[..., :8].mean(-1) - pers[..., 8:].mean(-1),
              pers[..., :4].mean(-1) - pers[..., 4:8].mean(-1), pers[..., 0] - pers[..., 1]]
    d = np.stack(diffs, axis=-1)  # seeds x questions x tests
    p = np.stack([ttest_p(d[s]) for s in range(seeds)])
    any_sig = (families.adjust(p, method) < ALPHA).any(axis=1)
    assert any_sig.mean() <= upper(ALPHA, seeds), any_sig.mean()


def null_report(seed: int, roles: pd.DataFrame, domains: dict, n_q: int = 300) -> dict:
    """The per-model tables with a p-value of one pure-null synthetic run (no bootstrap needed for the p-values)."""
    from persona_bench.analysis.attributes import attribute_effects

    g = make_matrix(roles, n_questions=n_q, effects=NO_EFFECTS, seed=seed, domains=domains)
    a = {"persona_effects": effects.persona_effects(None, n_boot=2, grid=g),
         "contrasts": effects.contrasts(None, n_boot=2, grid=g),
         "groups": {by: effects.group_effects(None, by, n_boot=2, grid=g) for by in ("template", "role_category",
                                                                                 "gender", "interpersonal")},
         "domain_match": effects.domain_match(None, n_boot=2, grid=g),
         "regression": effects.regression(None, grid=g),
         "attributes": attribute_effects(grid=g)}
    a["families"] = families.apply(a)
    return a


NULL_SEEDS = 60


@pytest.fixture(scope="module")
def null_reports():
    roles, domains = roles_frame(CONF / "role_set" / "paper.yaml")
    roles = roles[roles["name"].isin(ROLES)]
    return [null_report(s, roles, domains) for s in range(NULL_SEEDS)]


def test_null_reports_end_to_end_stay_at_the_family_level(null_reports):
    """Whole reports under a pure null (24 paper roles x 2 templates, 300 questions): per family, the share of
    reports with any significant flag, against the family's level with Monte Carlo error."""
    shares = {}
    for rec_list in (r["families"] for r in null_reports):
        for rec in rec_list:
            shares.setdefault(rec["name"], []).append(rec["n_significant"] > 0)
    shares = {k: float(np.mean(v)) for k, v in shares.items()}
    assert {"persona_vs_control", "attributes", "contrasts", "factor_levels", "regression"} <= set(shares)
    for name, share in shares.items():
        assert share <= upper(ALPHA, NULL_SEEDS), (name, shares)


def test_every_p_value_is_corrected_and_only_the_corrected_one_decides(null_reports):
    a = null_reports[0]
    recs = {r["name"]: r for r in a["families"]}
    assert recs["persona_vs_control"]["method"] == "holm" and recs["regression"]["method"] == "fdr_bh"
    pe = a["persona_effects"]
    np.testing.assert_allclose(pe["p_adj"], pe["p_holm"])  # the persona family is Holm over all personas, as before
    for path, item in families.walk(a, ()):
        if path[-1:] == ("families",):
            continue
        if isinstance(item, dict):
            assert item["significant"] == (item["p_adj"] < ALPHA), path
            continue
        assert {"p_adj", "family", "significant"} <= set(item.columns), path
        assert (item["significant"] == (item["p_adj"].fillna(1) < ALPHA)).all(), path
        assert (item["p_adj"].dropna() >= item["p"].dropna() - 1e-12).all(), path
    assert recs["persona_vs_control"]["n_tests"] == len(pe)
    assert a["domain_match"]["family"] == "contrasts"


def test_a_table_no_family_declares_gets_its_own_family_with_a_warning(caplog):
    a = {"contrasts": pd.DataFrame({"contrast": ["x", "y"], "p": [0.01, 0.04]}),
         "extra": {"table": pd.DataFrame({"p": [0.02, 0.5], "spearman_p": [0.01, 0.9]})}}
    recs = families.apply(a)
    assert [r["name"] for r in recs] == ["contrasts", "undeclared: extra/table"]
    assert "belong to no declared family" in caplog.text
    t = a["extra"]["table"]
    np.testing.assert_allclose(t["p_adj"], [0.04, 0.5])
    np.testing.assert_allclose(t["spearman_p_adj"], [0.02, 0.9])  # a second test of the same rows: corrected alike


# --------------------------------------------------------------------------- equivalence (TOST)

SEEDS = 200


def persona_table(rng, n: int, discordance: float, delta: float, k: int = 5) -> pd.DataFrame:
    """A persona_effects-like table of k personas with true difference delta, from simulated paired counts."""
    c = rng.multinomial(n, [(discordance + delta) / 2, (discordance - delta) / 2, 1 - discordance], size=k)
    b, w = c[:, 0], c[:, 1]
    return pd.DataFrame({"template": "speaker", "role": [f"r{i}" for i in range(k)], "n_questions": n,
                         "delta": (b - w) / n, "n_better": b, "n_worse": w, "p": mcnemar_p(b, w)})


def persona_verdicts(n: int, delta: float, discordance: float = 0.1, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(SEEDS):
        t = persona_table(rng, n, discordance, delta)
        families.apply({"persona_effects": t}, margin=0.01)
        out += list(t["verdict"])
    return pd.Series(out).value_counts(normalize=True)


def test_tost_says_no_effect_when_there_is_none_and_n_is_large():
    v = persona_verdicts(n=40_000, delta=0.0)
    assert v.get("no effect larger than 1 point", 0) >= 0.95, v


def test_tost_is_inconclusive_when_there_is_no_effect_but_few_questions():
    v = persona_verdicts(n=300, delta=0.0)
    assert v.get("inconclusive", 0) >= 0.95, v
    assert v.get("no effect larger than 1 point", 0) == 0, v


@pytest.mark.parametrize("n", [300, 2410, 40_000])
def test_tost_never_says_no_effect_when_the_effect_exceeds_the_margin(n):
    v = persona_verdicts(n=n, delta=0.02)
    assert v.get("no effect larger than 1 point", 0) == 0 and v.get("effect smaller than 1 point", 0) == 0, v


def test_tost_at_the_margin_claims_equivalence_at_most_at_its_level():
    """At a true difference of exactly the margin, "no effect larger than 1 point" is a false claim: per persona
    at most alpha (before the correction makes it rarer still)."""
    rng = np.random.default_rng(5)
    n, d = 20_000, 0.1
    t = persona_table(rng, n, d, 0.01, k=SEEDS * 10)
    p = tost_p(t["delta"], paired_se(t["n_better"], t["n_worse"], t["n_questions"]), 0.01)
    assert (p < ALPHA).mean() <= upper(ALPHA, len(t))


def test_tost_on_attribute_terms_uses_their_se_and_df():
    rng = np.random.default_rng(6)
    rows = []
    for true, se in ((0.0, 0.002), (0.0, 0.02), (0.03, 0.002)):
        est = true + se * rng.standard_t(20, size=SEEDS)
        rows.append(pd.DataFrame({"term": "gender=female", "estimate": est, "se": se, "df": 20.0,
                                  "p": 2 * stats.t.sf(np.abs(est / se), 20)}))
    shares = []
    for t in rows:  # one family of one term per simulated report, as the attribute family is per report
        v = []
        for i in range(SEEDS):
            one = t.iloc[[i]].reset_index(drop=True)
            families.apply({"attributes": {"estimates": one}})
            v.append(one["verdict"].iloc[0])
        shares.append(pd.Series(v).value_counts(normalize=True))
    within = shares[0].get("no effect larger than 1 point", 0) + shares[0].get("effect smaller than 1 point", 0)
    assert within >= 0.95  # precise and null: equivalent (significant as well in about alpha of the runs)
    assert shares[1].get("inconclusive", 0) >= 0.9  # imprecise: inconclusive
    assert shares[2].get("effect", 0) >= 0.95 and shares[2].get("no effect larger than 1 point", 0) == 0


def test_verdicts_and_the_paired_se():
    v = verdicts([True, True, False, False, False], [False, True, True, False, False], [1, 1, 1, 1, 0], 0.01)
    assert list(v) == ["effect", "effect smaller than 1 point", "no effect larger than 1 point", "inconclusive", ""]
    # no discordant question among few: not a se of 0, so no claim of equivalence from nothing
    assert paired_se(0, 0, 100) > 0.005
    assert tost_p(0.0, paired_se(0, 0, 100), 0.01) > ALPHA
    assert np.isnan(tost_p(0.0, 0.001, 0.01, df=0.0)) and tost_p(0.0, 0.001, 0.01, df=np.inf) < ALPHA  # df 0: no test


# --------------------------------------------------------------------------- figures and the report


def test_the_strategies_figure_colours_corrected_significance_only():
    from persona_bench.report import figures

    t = pd.DataFrame({"strategy": ["a", "b"], "delta": [0.05, 0.01], "ci_low": [0.01, -0.01], "ci_high": [0.09, 0.03],
                      "p": [0.001, 0.01], "p_adj": [0.002, 0.07], "significant": [True, False]})
    fig = figures.strategies(t)
    colours = [tuple(round(c, 3) for c in patch.get_facecolor()[:3]) for patch in fig.axes[0].patches]
    import matplotlib.colors as mc

    red = tuple(round(c, 3) for c in mc.to_rgb(figures.SIGNIFICANT))
    assert colours[0] == red and colours[1] != red  # raw p = 0.01 < 0.05 is not significant after correction
    figures.plt.close(fig)


def test_the_report_states_families_verdicts_and_power(tmp_path):
    from test_report import write_run

    import persona_bench.report as report

    roles, domains = roles_frame(CONF / "role_set" / "paper.yaml")
    roles = roles[roles["name"].isin(ROLES[:12])]
    df, _ = make_predictions(roles, n_questions=200, effects=PlantedEffects(role={"doctor": 0.15}), domains=domains,
                             seed=4)
    run = write_run(df, tmp_path / "runs" / "synthetic-0000abcd")
    out = tmp_path / "report"
    assert report.main([str(run), "--out", str(out), "--n-boot", "50", "--no-similarity",
                        "--equivalence-margin", "0.02"]) == 0
    doc = json.loads((out / "report.json").read_text())
    m = doc["per_model"]["synthetic"]
    names = {f["name"]: f for f in m["families"]}
    assert {"persona_vs_control", "contrasts", "factor_levels", "regression", "strategies"} <= set(names)
    assert names["persona_vs_control"]["equivalence_margin"] == 0.02
    for s in m["strategies"]:
        assert s["significant"] == (s["p_adj"] is not None and s["p_adj"] < ALPHA)
    doctor = [r for r in m["persona_effects"] if r["role"] == "doctor"]
    assert all(r["verdict"] == "effect" for r in doctor)
    assert m["power"]["persona_mde"] and 0 < m["power"]["discordance"] < 1
    assert doc["cross_model"]["side_by_side"][0]["family"] == "contrasts"
    page = (out / "report.html").read_text()
    assert {"attributes", "persona_vs_control"} <= set(names) and all(e.get("verdict") for e in
                                                                   m["attributes"]["estimates"])
    for text in ("Families of tests and their corrections", "Verdicts (personas against the control)",
                 "Verdicts (attribute effects)",
                 "no effect larger than 2 points", "Power achieved"):
        assert text in page, text


def test_the_margin_is_a_runtime_key_and_is_checked(tmp_path):
    from helpers import compose_cfg

    from persona_bench.config import ConfigError, validate
    from persona_bench.config.job_id import config_id

    base = compose_cfg(out=str(tmp_path))
    wide = compose_cfg(["report.equivalence_margin=0.02"], out=str(tmp_path))
    assert base.report.equivalence_margin == 0.01 and wide.report.equivalence_margin == 0.02
    assert config_id(base) == config_id(wide)  # the report's margin does not change what the job computes
    with pytest.raises(ConfigError, match="equivalence_margin"):
        validate(compose_cfg(["report.equivalence_margin=0"], out=str(tmp_path)))
