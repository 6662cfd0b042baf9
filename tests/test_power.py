"""Power and minimum detectable effects (analysis/power.py) against simulation, and the dry-run plan's power
lines. The statistics are simulated directly (counts, role-level means), not the models: a few seconds in all.

Measured (2026-11-30, seeds as in the tests): at the MDE the exact McNemar test rejected in 0.80 of 4,000
simulated runs at the paper's size (2,410 questions, 648 personas, discordance 0.04; MDE 1.9 points) and in
0.80 at 400 questions x 16 personas (discordance 0.15); with the 15 other personas null and Holm over all 16,
the planted persona was found in 0.81. An attribute term at its planned MDE (paper roles, roles random) was
rejected in 0.80 of 4,000 simulated role-level fits.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import CONF

from persona_bench.analysis import power
from persona_bench.analysis.families import adjust
from persona_bench.analysis.matrix import level_labels
from persona_bench.analysis.stats import mcnemar_p
from persona_bench.analysis.synthetic import roles_frame
from persona_bench.outputs import CONTROL

SEEDS = 4000
MC = 3 * np.sqrt(0.8 * 0.2 / SEEDS)  # three Monte Carlo standard errors of a share near 0.8


def simulate_counts(rng, n, discordance, delta, size):
    """(better, worse) counts of a persona against the control on n questions: each question better with
    probability (d + delta) / 2, worse with (d - delta) / 2."""
    pv = [(discordance + delta) / 2, (discordance - delta) / 2, 1 - discordance]
    c = rng.multinomial(n, pv, size=size)
    return c[..., 0], c[..., 1]


@pytest.mark.parametrize("n, discordance, n_tests", [(2410, 0.04, 648), (400, 0.15, 16)])
def test_mcnemar_power_is_80_percent_at_the_mde(n, discordance, n_tests):
    mde = power.persona_mde(n, discordance, n_tests=n_tests)
    assert 0 < mde < discordance
    rng = np.random.default_rng(1)
    b, w = simulate_counts(rng, n, discordance, mde, SEEDS)
    share = float((mcnemar_p(b, w) < 0.05 / n_tests).mean())
    assert abs(share - 0.8) < MC, (mde, share)
    b, w = simulate_counts(rng, n, discordance, 0.0, SEEDS)  # no effect: at most alpha / n_tests
    assert (mcnemar_p(b, w) < 0.05 / n_tests).mean() <= 0.05 / n_tests + 3 * np.sqrt(0.05 / n_tests / SEEDS)


def test_a_planted_persona_among_nulls_is_found_with_holm_as_often_as_planned():
    n, d, k = 400, 0.15, 16
    mde = power.persona_mde(n, d, n_tests=k)
    rng = np.random.default_rng(2)
    deltas = np.r_[mde, np.zeros(k - 1)]
    counts = np.stack([np.stack(simulate_counts(rng, n, d, delta, SEEDS), axis=-1) for delta in deltas], axis=1)
    p = mcnemar_p(counts[..., 0], counts[..., 1])
    found = adjust(p, "holm")[:, 0] < 0.05  # one Holm family per simulated report
    assert found.mean() >= 0.8 - MC  # Holm: at least Bonferroni's power
    assert found.mean() <= 0.8 + 2 * MC


def test_persona_mde_grows_with_the_family_and_the_discordance_and_shrinks_with_n():
    assert power.persona_mde(2410, 0.04, n_tests=648) > power.persona_mde(2410, 0.04, n_tests=1)
    assert power.persona_mde(2410, 0.15, n_tests=648) > power.persona_mde(2410, 0.04, n_tests=648)
    assert power.persona_mde(1000, 0.1, n_tests=16) > power.persona_mde(4000, 0.1, n_tests=16)
    # the demo (208 questions, 16 personas, 4% discordance): even all discordant questions one way do not suffice
    assert power.persona_mde(208, 0.04, n_tests=16) == float("inf")


def paper_personas(templates=("speaker", "audience", "imagine_speaker", "imagine_audience")) -> pd.DataFrame:
    roles, _ = roles_frame(CONF / "role_set" / "paper.yaml")
    p = pd.DataFrame([(t, i) for t in templates for i in range(len(roles))], columns=["template", "_i"])
    p = p.join(roles, on="_i").rename(columns={"name": "role", "category": "role_category"})
    p["interpersonal"] = level_labels(p["interpersonal"], "interpersonal")
    p["domain_role"] = np.where(p["domain"].notna(), "domain role", "no domain")
    return p


def test_attribute_mde_matches_simulated_power_of_the_role_level_fit():
    """One template: a persona is a role, so the attribute model is a regression over roles with variance
    role_sd^2 + d / 2n per role; the least-squares t-test (df = roles - terms) at alpha / terms rejects a term
    set at its MDE 80% of the time."""
    personas = paper_personas(("speaker",))
    n, d, sd = 2410, 0.04, 0.02
    table = power.attribute_mde(personas, n, d, role_sd=sd)
    ok = table[table["se"].notna()].reset_index(drop=True)
    assert table["se"].isna().sum() == 1  # gender=unknown: aliased (no interpersonal role has an unknown gender)
    term = ok.index[ok["term"] == "interpersonal=interpersonal"][0]
    terms, cols = power.attribute_design(personas)
    x = np.column_stack([np.ones(len(personas))] + cols)
    keep = [0] + [j + 1 for j, (f, lv, _) in enumerate(terms) if f"{f}={lv}" in set(ok["term"])]
    x = x[:, keep]
    beta = np.zeros(x.shape[1])
    beta[1 + term] = ok.loc[term, "mde"]
    rng = np.random.default_rng(3)
    y = (x @ beta)[:, None] + rng.normal(0, np.sqrt(sd ** 2 + d / (2 * n)), size=(len(x), SEEDS))
    xtx_inv = np.linalg.inv(x.T @ x)
    b = xtx_inv @ x.T @ y
    dof = len(x) - x.shape[1]
    s2 = ((y - x @ b) ** 2).sum(axis=0) / dof
    t = b[1 + term] / np.sqrt(s2 * xtx_inv[1 + term, 1 + term])
    from scipy import stats

    share = float((2 * stats.t.sf(np.abs(t), dof) < 0.05 / len(ok)).mean())
    assert ok.loc[term, "df"] == dof
    assert abs(share - 0.8) < MC, share


def test_attribute_mde_at_the_papers_size_states_every_term():
    t = power.attribute_mde(paper_personas(), 2410, 0.04, in_domain=pd.Series({"doctor": 300.0, "lawyer": 100.0}))
    assert {"template=audience", "role_category=family", "gender=female", "domain_match=in-domain"} <= set(t["term"])
    est = t[t["se"].notna()]
    assert (est["mde"] > 0).all() and np.isfinite(est["mde"]).all()
    # roles random: a role-level attribute needs far more than a template (within-role) contrast
    assert est.set_index("term").loc["interpersonal=interpersonal", "mde"] > 5 * est.set_index("term").loc[
        "template=audience", "mde"]


def predictions(n_q=50, discordance=0.2, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ctrl = rng.random(n_q) < 0.5
    rows = [{"question_id": f"q{i}", "template": CONTROL, "role": None, "correct": bool(c)} for i, c in enumerate(ctrl)]
    for role in ("doctor", "lawyer"):
        flip = rng.random(n_q) < discordance
        rows += [{"question_id": f"q{i}", "template": "speaker", "role": role, "correct": bool(c != f)}
                 for i, (c, f) in enumerate(zip(ctrl, flip))]
    return pd.DataFrame(rows)


def test_discordance_and_prior_runs(tmp_path):
    df = predictions()
    ctrl = df[df.template == CONTROL].set_index("question_id")["correct"]
    per = df[df.template != CONTROL].assign(c=lambda t: t.question_id.map(ctrl))
    expected = (per.correct != per.c).groupby(per.role).mean().mean()
    assert power.discordance(df) == pytest.approx(expected)
    (tmp_path / "empty").mkdir()
    (tmp_path / "done").mkdir()
    df.to_parquet(tmp_path / "done" / "predictions.parquet")
    rate, source = power.prior_discordance([tmp_path / "empty", tmp_path / "done"])
    assert rate == pytest.approx(expected) and source.endswith("done/predictions.parquet")
    assert power.prior_discordance([tmp_path / "empty"]) == (None, None)


def fake_job(out, questions=40):
    role = SimpleNamespace(name="doctor", category="occupation", gender="unknown", interpersonal=False,
                           domain="medicine", subjects=("clinical_knowledge",))
    roles = [role, SimpleNamespace(name="mother", category="family", gender="female", interpersonal=True,
                                   domain=None, subjects=()),
             SimpleNamespace(name="friend", category="social", gender="neutral", interpersonal=True,
                             domain=None, subjects=())]
    templates = [SimpleNamespace(name=CONTROL), SimpleNamespace(name="speaker"), SimpleNamespace(name="audience")]
    grid = [(templates[0], None)] + [(t, r) for t in templates[1:] for r in roles]
    qs = [SimpleNamespace(subject="clinical_knowledge" if i % 4 == 0 else "anatomy") for i in range(questions)]
    return SimpleNamespace(out=out, cfg=SimpleNamespace(model=SimpleNamespace(name="m")), questions=qs, grid=grid,
                           roles=roles)


def test_the_plan_takes_the_discordance_from_a_prior_run_beside_it(tmp_path):
    from persona_bench.run.plan import power_plan

    job = fake_job(tmp_path / "m-new")
    plan = power_plan(job)
    assert plan["discordance_source"] == "default" and plan["discordance"] == power.DEFAULT_DISCORDANCE
    assert plan["mde_tests"] == 6 and plan["mde_persona"] > 0
    assert {a["term"] for a in plan["mde_attributes"]} >= {"template=audience", "domain_match=in-domain"}
    (tmp_path / "m-old").mkdir()
    predictions(discordance=0.3).to_parquet(tmp_path / "m-old" / "predictions.parquet")
    plan = power_plan(job)
    assert plan["discordance_source"].endswith("m-old/predictions.parquet") and plan["discordance"] > 0.2
