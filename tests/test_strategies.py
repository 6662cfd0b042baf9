"""Persona-selection strategies on synthetic predictions with known structure (a fake encoder; one test
uses the real MiniLM)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import BagOfWords

from persona_bench.analysis import strategies as S
from persona_bench.analysis.matrix import hash_split

SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def make_df(n_q, personas, p_correct, seed=0, split=True, in_domain=None, words=None):
    """Predictions: control + personas over n_q questions in 4 subjects. p_correct(i, persona) -> probability
    that the persona (None = control) answers question i correctly; wrong answers are a random other option."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_q):
        qid = f"s{i % 4}/{i:05d}"
        ans = int(rng.integers(4))
        word = words[i] if words else ""
        prompt = f"Question: {word} item {rng.integers(1000)} about topic {i % 7}?\nAnswer:"
        for p in [None] + personas:
            ok = bool(rng.random() < p_correct(i, p))
            pred = ans if ok else int((ans + rng.integers(1, 4)) % 4)
            t, r = ("control", None) if p is None else p.split("/")
            rows.append(dict(model="m", question_id=qid, subject=f"s{i % 4}", template=t, role=r,
                             in_domain=None if p is None else bool(in_domain and in_domain(f"s{i % 4}", p)),
                             correct=ok, pred=pred, answer=ans, prompt=(f"You are a {r}.\n" if r else "") + prompt,
                             split=SPLITS[i % 10] if split else None))
    return pd.DataFrame(rows)


def texts_for(personas):
    return pd.DataFrame([dict(template=p.split("/")[0], role=p.split("/")[1], text=f"You are a {p.split('/')[1]}.")
                         for p in personas])


PERSONAS = ["speaker/star", "speaker/a", "speaker/b", "audience/c"]


def test_best_on_train_picks_the_planted_persona_and_oracle_bounds_everything():
    df = make_df(300, PERSONAS, lambda i, p: 0.9 if p == "speaker/star" else 0.3, seed=1)
    res = S.evaluate_strategies(df, texts_for(PERSONAS), n_boot=500, encoder=BagOfWords())
    r = res.set_index("strategy")
    assert list(res.strategy) == ["random", "best_on_train", "best_per_subject", "best_in_domain", "most_similar",
                                  "classifier", "majority_vote", "oracle"]
    assert r.loc["best_on_train", "detail"].startswith("speaker/star")
    g = S.strategy_matrix(df)
    test = g.mask("test")
    star_test = g.correct[test, g.names.index("speaker/star")].mean()
    assert r.loc["best_on_train", "accuracy"] == pytest.approx(star_test, abs=1e-6)
    assert r.loc["best_on_train", "delta"] > 0.4 and r.loc["best_on_train", "p"] < 1e-6
    assert (r["accuracy"] <= r.loc["oracle", "accuracy"] + 1e-12).all()
    assert (r["n_test"] == int(test.sum())).all() and r["control_accuracy"].nunique() == 1
    assert ((r["ci_low"] <= r["delta"]) & (r["delta"] <= r["ci_high"])).all()
    assert r.loc["random", "spread"] > 0 and np.isnan(r.loc["best_on_train", "spread"])


def test_majority_vote_by_hand():
    # 4 questions, 4 personas; all test. Control predictions 0, 2, 0, 0.
    preds = [[1, 1, 2, 0], [0, 0, 2, 2], [3, 3, 1, 1], [1, 2, 2, 3]]
    answers = [1, 2, 1, 1]
    control_pred = [0, 2, 0, 0]
    rows = []
    for q in range(4):
        rows.append(dict(question_id=f"q{q}", subject="s", template="control", role=None, pred=control_pred[q],
                         answer=answers[q], correct=control_pred[q] == answers[q], split="test", prompt="x"))
        for j, p in enumerate(preds[q]):
            rows.append(dict(question_id=f"q{q}", subject="s", template="t", role=f"r{j}", pred=p, answer=answers[q],
                             correct=p == answers[q], split="test", prompt="x"))
    g = S.strategy_matrix(pd.DataFrame(rows))
    got, detail = S.majority_vote(g, g.mask("test"))
    # q0: 1 wins (2 votes) -> right; q1: 0/2 tie, control says 2 -> 2, right;
    # q2: 3/1 tie, control (0) not tied -> lowest, 1, right; q3: 2 wins -> wrong
    assert got.tolist() == [True, True, True, False]
    assert "2 tie(s)" in detail


def test_classifier_beats_random_when_a_question_feature_decides_the_persona():
    words = ["alpha" if i % 3 else "beta" for i in range(400)]
    personas = ["speaker/a", "speaker/b", "speaker/c"]

    def p(i, persona):
        if persona == "speaker/a":
            return 0.95 if words[i] == "alpha" else 0.05
        if persona == "speaker/b":
            return 0.95 if words[i] == "beta" else 0.05
        return 0.25

    df = make_df(400, personas, p, seed=2, words=words)
    r = S.evaluate_strategies(df, texts_for(personas), n_boot=200, encoder=BagOfWords()).set_index("strategy")
    assert r.loc["classifier", "accuracy"] > 0.85
    assert r.loc["classifier", "accuracy"] > r.loc["random", "accuracy"] + 0.3
    assert r.loc["classifier", "accuracy"] > r.loc["best_on_train", "accuracy"] + 0.15
    assert "chosen on" in r.loc["classifier", "detail"]


def test_classifier_handles_personas_constant_on_train():
    personas = ["speaker/always", "speaker/never", "speaker/half"]
    df = make_df(100, personas, lambda i, p: {"speaker/always": 1.0, "speaker/never": 0.0}.get(p, 0.5), seed=3)
    r = S.evaluate_strategies(df, texts_for(personas), n_boot=100, encoder=BagOfWords()).set_index("strategy")
    assert r.loc["classifier", "accuracy"] == 1.0  # picks the always-right persona everywhere
    assert "2 persona(s) constant on train" in r.loc["classifier", "detail"]


def test_best_in_domain_falls_back_to_control_without_an_in_domain_persona():
    df = make_df(200, PERSONAS, lambda i, p: 0.8 if p == "speaker/a" else 0.4, seed=4,
                 in_domain=lambda subject, p: subject == "s0" and p in ("speaker/a", "speaker/b"))
    g = S.strategy_matrix(df)
    test = g.mask("test")
    got, detail = S.best_per_subject(g, test, in_domain_only=True)
    subj = g.subjects[test]
    a = g.correct[test, g.names.index("speaker/a")]
    expected = np.where(subj == "s0", a, g.control[test])
    assert got.tolist() == expected.tolist()
    assert "3 subject(s) without an in-domain persona use the control" in detail


def test_split_fallback_is_deterministic_and_60_20_20():
    ids = [f"subj/{i:016x}" for i in range(3000)]
    first = [hash_split(q) for q in ids]
    assert first == [hash_split(q) for q in ids]
    share = pd.Series(first).value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.6, abs=0.03) and share["val"] == pytest.approx(0.2, abs=0.03)
    df = make_df(120, PERSONAS[:2], lambda i, p: 0.5, seed=5, split=False)
    g = S.strategy_matrix(df)
    assert g.split_from_hash == 120 and g.split.tolist() == [hash_split(q) for q in g.questions]
    kw = dict(n_boot=100, encoder=BagOfWords())
    one = S.evaluate_strategies(df, texts_for(PERSONAS[:2]), **kw)
    two = S.evaluate_strategies(df.sample(frac=1, random_state=0), texts_for(PERSONAS[:2]), **kw)
    pd.testing.assert_frame_equal(one, two)
    assert "question_id hash" in one.detail[0]


def test_mcnemar_exact():
    a = np.array([True] * 5 + [False] * 3)
    b = np.array([False] * 5 + [False] * 3)
    assert S.mcnemar_exact(a, b) == pytest.approx(2 * 0.5 ** 5)
    assert S.mcnemar_exact(a, a) == 1.0


def test_most_similar_with_real_minilm():
    personas = ["speaker/doctor", "speaker/lawyer"]
    words = ["patient disease treatment medicine" if i % 2 else "court contract law judge" for i in range(40)]
    df = make_df(40, personas, lambda i, p: 1.0 if (p == "speaker/doctor") == bool(i % 2) else 0.0, seed=6, words=words)
    texts = texts_for(personas)
    r = S.evaluate_strategies(df, texts, n_boot=100).set_index("strategy")  # encoder=None: MiniLM
    assert r.loc["most_similar", "accuracy"] == 1.0
    assert r.loc["oracle", "accuracy"] == 1.0


def test_without_similarity_no_encoder_is_used():
    class Refuses:
        def encode(self, texts, **kw):
            raise AssertionError("the encoder was used")

    df = make_df(60, PERSONAS[:2], lambda i, p: 0.5, seed=7)
    r = S.evaluate_strategies(df, texts_for(PERSONAS[:2]), n_boot=50, encoder=Refuses(), use_similarity=False)
    assert list(r.strategy) == ["random", "best_on_train", "best_per_subject", "best_in_domain", "majority_vote", "oracle"]


def test_joint_logistic_fit_equals_scikit_learn_per_persona():
    """fit_logistic_path fits every persona's L2 logistic regression in one L-BFGS; each must be the
    model scikit-learn's LogisticRegression(C) fits alone (same objective, unpenalised intercept)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16))
    y = (rng.random((300, 5)) < 1 / (1 + np.exp(-(x @ rng.standard_normal((16, 5)))))).astype(int)
    for (w, b), c in zip(S.fit_logistic_path(x, y, (0.1, 1.0, 10.0)), (0.1, 1.0, 10.0)):
        for j in range(y.shape[1]):
            ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x, y[:, j])
            assert w[:, j] == pytest.approx(ref.coef_[0], abs=2e-3)
            assert b[j] == pytest.approx(ref.intercept_[0], abs=2e-3)
            p = 1 / (1 + np.exp(-(x @ w[:, j] + b[j])))
            assert p == pytest.approx(ref.predict_proba(x)[:, 1], abs=1e-4)
