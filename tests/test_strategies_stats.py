"""Calibration of the selection-aware statistics (Issue 16): the shrunken best persona and rank intervals, the
random strategy's test, the selection-aware intervals of best-on-train, and the split-half noise baseline of
logits against generation. Outcomes are simulated straight into the question x persona matrix
(synthetic.outcome_matrix: the generative model of synthetic.make_predictions), so each check runs over many
seeds in seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from persona_bench.analysis import compare, selection, shrinkage, strategies
from persona_bench.analysis.synthetic import outcome_matrix


def true_delta(p: np.ndarray) -> np.ndarray:
    """Each persona's true difference to control (the offsets, after any clipping)."""
    return (p[:, 1:] - p[:, [0]]).mean(axis=0)


# ------------------------------------------------------------------------------------ shrinkage and ranks


def test_best_persona_under_the_null_is_shrunk_to_zero_while_the_raw_maximum_looks_significant():
    covered, sim_covered, raw_sig, shrunk = [], [], [], []
    for seed in range(30):
        g, _ = outcome_matrix(np.zeros(162), n_questions=1200, seed=seed)
        t = shrinkage.shrink(grid=g, n_boot=200, seed=seed)
        best = shrinkage.best_persona(t)
        covered.append(best["ci_low"] <= 0 <= best["ci_high"])
        sim_covered.append(((t["sim_ci_low"] <= 0) & (0 <= t["sim_ci_high"])).all())
        top = t.loc[t["delta"].idxmax()]
        raw_sig.append(top["delta"] - 1.96 * top["se"] > 0)  # the raw maximum with its unadjusted interval
        shrunk.append(best["shrunken"])
    assert np.mean(covered) >= 0.9
    assert np.mean(sim_covered) >= 0.9  # simultaneous intervals: every persona covers 0
    assert np.mean(raw_sig) >= 0.3  # about half the data sets at this size
    assert np.abs(shrunk).max() < 0.025 and abs(np.mean(shrunk)) < 0.005


def test_a_planted_best_persona_has_rank_interval_at_one_and_a_covering_simultaneous_interval():
    offsets = np.zeros(162)
    offsets[7] = 0.08
    for seed in range(5):
        g, p = outcome_matrix(offsets, n_questions=1200, seed=seed)
        t = shrinkage.shrink(grid=g, n_boot=300, seed=seed)
        best = shrinkage.best_persona(t)
        assert best["role"] == "r7"
        assert best["rank_ci_low"] == 1 and best["rank_ci_high"] <= 2 and best["n_could_be_best"] <= 2
        truth = true_delta(p)[7]
        assert best["sim_ci_low"] <= truth <= best["sim_ci_high"]
        assert best["prior_outlier"]  # a lone effect: the normal prior does not explain it, and says so
        assert t["rank_ci_low"].min() == 1
        assert ((t["rank_ci_low"] <= t["rank"]) & (t["rank"] <= t["rank_ci_high"])).all()


def test_shrunken_intervals_cover_under_a_normal_spread_of_persona_effects():
    cover, cover_best, width_ratio = [], [], []
    for seed in range(20):
        offsets = np.random.default_rng(1000 + seed).normal(0, 0.02, 162)
        g, p = outcome_matrix(offsets, n_questions=1200, seed=seed)
        t = shrinkage.shrink(grid=g, n_boot=100, seed=seed)
        truth = true_delta(p)
        cover.append(((t["ci_low"] <= truth) & (truth <= t["ci_high"])).mean())
        b = t.sort_values(["shrunken", "delta"], ascending=False).index[0]
        cover_best.append(t.loc[b, "ci_low"] <= truth[b] <= t.loc[b, "ci_high"])
        width_ratio.append(((t["ci_high"] - t["ci_low"]) / (2 * 1.96 * t["se"])).mean())
        assert t.attrs["tau"] == pytest.approx(0.02, abs=0.006)
    assert np.mean(cover) >= 0.93
    assert np.mean(cover_best) >= 0.85
    assert np.mean(width_ratio) < 1  # shrinkage narrows the intervals where it can


def test_reml_recovers_tau_and_is_zero_without_spread():
    rng = np.random.default_rng(0)
    s2 = rng.uniform(0.5, 2.0, 4000) ** 2
    e = rng.normal(0, 1.5, 4000) + rng.normal(0, np.sqrt(s2))
    tau2, mu, _ = shrinkage.reml_tau2(e, s2)
    assert np.sqrt(tau2) == pytest.approx(1.5, rel=0.05) and mu == pytest.approx(0, abs=0.1)
    assert shrinkage.reml_tau2(rng.normal(0, np.sqrt(s2)) * 0.5, s2)[0] == 0.0


# ------------------------------------------------------------------------------------------ random strategy


def random_rejections(offset: float, n_seeds: int, n_questions: int = 1200, k: int = 20) -> float:
    hits = []
    for seed in range(n_seeds):
        g, _ = outcome_matrix(np.full(k, offset), n_questions=n_questions, seed=seed)
        test = g.mask("test")
        expected, _ = strategies.random_persona(g, test)
        hits.append(strategies.random_test(expected, g.control[test]) < 0.05)
    return float(np.mean(hits))


def test_random_strategy_test_holds_its_level_and_has_power():
    assert random_rejections(0.0, 1500) <= 0.06
    assert random_rejections(0.04, 200, n_questions=2410) >= 0.8


def test_random_strategy_row_is_exact_and_seed_free():
    g, _ = outcome_matrix(np.linspace(-0.05, 0.05, 12), n_questions=600, seed=3)
    one = strategies.score_strategies(g, n_boot=100, seed=0).set_index("strategy")
    two = strategies.score_strategies(g, n_boot=100, seed=1).set_index("strategy")
    test = g.mask("test")
    assert one.loc["random", "accuracy"] == pytest.approx(g.correct[test].mean(), abs=1e-6)
    assert one.loc["random", "p"] == two.loc["random", "p"]
    assert one.loc["random", "test"] == strategies.PAIRED_T and one.loc["best_on_train", "test"] == strategies.MCNEMAR
    assert list(one.columns) == strategies.COLUMNS[1:]


# ------------------------------------------------------------------------------ selection-aware intervals


def test_best_on_train_interval_covers_the_selected_personas_true_difference():
    covered, covered_fixed, wider = [], [], []
    for seed in range(100):
        offsets = np.random.default_rng(5000 + seed).normal(0, 0.01, 40)
        g, p = outcome_matrix(offsets, n_questions=1200, seed=seed)
        r = strategies.score_strategies(g, n_boot=300, seed=seed).set_index("strategy").loc["best_on_train"]
        k = g.names.index(r["detail"].split(" ")[0])
        truth = true_delta(p)[k]
        covered.append(r["ci_low"] <= truth <= r["ci_high"])
        test = g.mask("test")
        d = g.diff[test, k]
        boot = np.random.default_rng(seed).integers(0, len(d), (300, len(d)))
        lo, hi = np.percentile(d[boot].mean(axis=1), [2.5, 97.5])
        covered_fixed.append(lo <= truth <= hi)
        wider.append(r["ci_high"] - r["ci_low"] >= hi - lo - 1e-9)
        assert r["interval"] == strategies.RESELECTED
    assert np.mean(covered) >= 0.93
    assert np.mean(wider) >= 0.5


def test_reselection_reproduces_the_strategies_choice_without_resampling():
    """With every resample equal to the data (weights 1), the re-run choice is the strategy's own."""
    offsets = np.zeros(30)
    offsets[[3, 11]] = 0.03
    g, _ = outcome_matrix(offsets, n_questions=900, seed=4)
    g.in_domain[:, :5] = (g.subjects[:, None] < "s3")  # an in-domain persona set for a few subjects
    train, test = g.mask("train"), g.mask("test")
    w_tr, w_te = np.ones((2, train.sum()), np.float32), np.ones((2, test.sum()), np.float32)
    ctrl = g.control[test].mean()
    assert selection.best_on_train_boot(g, w_tr, w_te) == pytest.approx(
        strategies.best_on_train(g, test)[0].mean() - ctrl)
    got = selection.best_per_subject_boot(g, w_tr, w_te)
    assert got["best_per_subject"] == pytest.approx(strategies.best_per_subject(g, test)[0].mean() - ctrl)
    assert got["best_in_domain"] == pytest.approx(
        strategies.best_per_subject(g, test, in_domain_only=True)[0].mean() - ctrl)


# ------------------------------------------------------------------------------ split-half noise baseline


def pair_frame(offsets, n_questions=800, seed=0, flip=0.15) -> pd.DataFrame:
    """A logit reading from the synthetic model and a generated one that changes `flip` of its answers."""
    g, _ = outcome_matrix(offsets, n_questions=n_questions, seed=seed)
    rng = np.random.default_rng(seed + 1)
    pred = np.column_stack([g.control_pred, g.pred])
    gen = np.where(rng.random(pred.shape) < flip, (pred + rng.integers(1, 4, pred.shape)) % 4, pred)
    roles = [""] + list(g.personas["role"])
    templates = ["control"] + list(g.personas["template"])
    q, k = pred.shape
    return pd.DataFrame({"question_id": np.repeat(g.questions, k), "template": np.tile(templates, q),
                         "role": np.tile(roles, q), "answer": np.repeat(g.answers.astype(int), k),
                         "pred_logit": pred.ravel().astype(int), "pred_generate": gen.ravel().astype(int),
                         "parsed": True})


def test_split_half_baseline_is_chance_without_persona_effects_while_full_agreement_looks_high():
    rows = [compare.compare_pair(compare.Pair("m", compare.SAME_PROMPTS, "m", "m", "m", "letter",
                                              pair_frame(np.zeros(100), 600, seed=s)))[0] for s in range(8)]
    r = pd.DataFrame(rows).mean(numeric_only=True)
    assert r["spearman"] > 0.5 and r["share_same_sign"] > 0.75  # shared per-prompt noise
    for m in ("logit", "generate", "cross"):
        # in one data set the split-half correlation is about (spread of the deltas - noise) / (spread + noise):
        # 0 on average over data sets
        assert abs(r[f"split_half_spearman_{m}"]) < 0.08 and r[f"split_half_spearman_{m}"] < r["spearman"] - 0.4
        # 1/2 on average over data sets; in one data set a chance shift of all personas against the control moves
        # both halves' signs together
        assert r[f"split_half_same_sign_{m}"] == pytest.approx(0.5, abs=0.1)
        assert r[f"split_half_same_sign_{m}"] < r["share_same_sign"] - 0.15
    planted = compare.split_half(pair_frame(np.linspace(-0.1, 0.1, 40), seed=9))
    assert planted["split_half_spearman_cross"] > 0.5 and planted["split_half_same_sign_logit"] > 0.7
