"""Persona-selection strategies (paper, section 6): can one pick, before answering, a persona that helps?

Each strategy picks a persona (or the control) for every question using the TRAIN questions (and VAL
for the classifier's regularisation), and is scored on the TEST questions against the control on the
same questions:

  random            a persona drawn uniformly per question: its expected correctness on a question is the mean
                    over the personas, computed exactly (no draws, no seed); spread = the sd of one draw's accuracy
  best_on_train     the persona with the best train accuracy
  best_per_subject  per subject, the persona with the best train accuracy on that subject
  best_in_domain    per subject, the best (train) of the personas whose in_domain is true for it;
                    subjects with no in-domain persona fall back to the control
  most_similar      the persona whose sentence is most similar (MiniLM cosine) to the question
  classifier        per persona, a logistic regression from the question's MiniLM embedding to
                    "this persona answers correctly" (train; C chosen on val); the persona with the
                    highest predicted probability
  majority_vote     the answer most personas predict (no single persona; ties: see majority_vote)
  model_pick/<t>    (runs with self_pick.parquet) the role the model itself picked for the question, under
                    template t; a question whose pick is unparsed, missing, or not a persona of the grid
                    under t gets the control
  oracle            correct when any persona (or the control) is correct: the upper bound

The matrix: `strategy_matrix(df)`, i.e. matrix.PersonaMatrix with questions sorted by question_id (so the
table's row order does not matter) and only the personas answered on every question (`complete()`; the
others are listed in the result's attrs["dropped_personas"]).

Split: the `split` column (the paper's train/val/test sample). A question whose split is missing
gets one from a hash of its question_id (matrix.hash_split: sha256 -> first 8 hex digits / 16**8 in
[0, 1): < 0.6 train, < 0.8 val, else test; 60/20/20, the same on every machine and run).

Columns of evaluate_strategies: strategy, accuracy, control_accuracy, delta, ci_low, ci_high (95%), interval
(how the interval was made: "selection re-run" for the strategies that choose on the train questions, a paired
bootstrap that resamples train and test questions and chooses again on each resample, selection.py; "test
questions" for the others, a paired bootstrap over the test questions with the choice held fixed: the whole
uncertainty for strategies without a training step, conditional on the fitted classifier for the classifier),
p (raw, two-sided, against the control on the test questions: no correction here; the report's families add it),
test (the test that gave p: exact McNemar on the test questions for a strategy's 0/1 answers given its choice;
for random, a paired t-test over test questions of the expected correctness minus the control's), n_test, spread
(sd of the accuracy of one random draw, exact; None for the other strategies), detail.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import pandas as pd

from persona_bench.analysis.matrix import PersonaMatrix
from persona_bench.analysis.selection import strategy_boot
from persona_bench.analysis.stats import mcnemar_exact, ttest_p

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 regularisation of the classifier, chosen on val
COLUMNS = ["strategy", "accuracy", "control_accuracy", "delta", "ci_low", "ci_high", "interval", "p", "test",
           "n_test", "spread", "detail"]
MCNEMAR = "exact McNemar"
PAIRED_T = "paired t over test questions"
RESELECTED = "selection re-run"
TEST_ONLY = "test questions"


def strategy_matrix(df: pd.DataFrame) -> PersonaMatrix:
    """The strategies' view of one model's predictions: questions sorted by question_id, only the personas
    answered on every question (the others in `dropped`)."""
    return PersonaMatrix.from_predictions(df, order="question_id").complete()


def _r(x) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


# --------------------------------------------------------------------------- strategies
# Each returns (per test question correctness: bool or, for random, the expected correctness, detail).


def _best(acc: np.ndarray, tiebreak: Optional[np.ndarray] = None, allowed: Optional[np.ndarray] = None) -> int:
    """Index of the highest `acc` among `allowed`; ties by `tiebreak` (higher first), then persona order."""
    acc = np.where(allowed, acc, -np.inf) if allowed is not None else acc
    tb = np.zeros_like(acc) if tiebreak is None else np.nan_to_num(tiebreak, nan=-1.0)
    return int(np.lexsort((np.arange(len(acc)), -tb, -np.nan_to_num(acc, nan=-1.0)))[0])


def _train_acc(g: PersonaMatrix, rows: np.ndarray) -> np.ndarray:
    return g.correct[rows].mean(axis=0) if rows.any() else np.full(len(g.personas), np.nan)


def best_on_train(g: PersonaMatrix, test: np.ndarray):
    acc = _train_acc(g, g.mask("train"))
    k = _best(acc)
    return g.correct[test, k], f"{g.names[k]} (train accuracy {acc[k]:.3f} on {int(g.mask('train').sum())} questions)"


def best_per_subject(g: PersonaMatrix, test: np.ndarray, in_domain_only: bool = False):
    train = g.mask("train")
    overall = _train_acc(g, train)
    choice: dict[str, Optional[int]] = {}
    for s in sorted(set(g.subjects[test])):
        rows = train & (g.subjects == s)
        allowed = None
        if in_domain_only:
            allowed = g.in_domain[g.subjects == s].any(axis=0)
            if not allowed.any():
                choice[s] = None  # no in-domain persona: the control
                continue
        acc = _train_acc(g, rows) if rows.any() else overall  # no train question: overall train accuracy
        choice[s] = _best(acc, overall, allowed)
    out = np.array([g.control[i] if choice[g.subjects[i]] is None else g.correct[i, choice[g.subjects[i]]]
                    for i in np.flatnonzero(test)], dtype=bool)
    picked = sorted({g.names[k] for k in choice.values() if k is not None})
    n_ctrl = sum(k is None for k in choice.values())
    detail = f"{len(choice)} test subjects; personas used: {', '.join(picked) or 'none'}"
    if in_domain_only:
        detail += f"; {n_ctrl} subject(s) without an in-domain persona use the control"
    return out, detail


def random_persona(g: PersonaMatrix, test: np.ndarray):
    """Per test question, the expected correctness of a uniformly drawn persona: the mean over the personas."""
    return g.correct[np.flatnonzero(test)].mean(axis=1), "uniform persona per question: expected accuracy (exact)"


def random_test(expected: np.ndarray, control: np.ndarray) -> float:
    """Raw two-sided p of the random strategy against the control: a paired t-test over questions of the
    expected correctness of a random persona minus the control's (questions independent; no draws)."""
    return float(ttest_p(np.asarray(expected, float) - np.asarray(control, float))[0])


def most_similar(g: PersonaMatrix, test: np.ndarray, sim: np.ndarray):
    """sim: (persona, question) cosine in matrix column order. Ties: the first persona."""
    k = sim[:, test].argmax(axis=0)
    idx = np.flatnonzero(test)
    counts = pd.Series([g.names[j] for j in k]).value_counts()
    top = ", ".join(f"{n} ({c})" for n, c in counts.head(3).items())
    return g.correct[idx, k], f"most chosen: {top}"


def fit_logistic_path(x: np.ndarray, y: np.ndarray, cs=C_GRID) -> list[tuple[np.ndarray, np.ndarray]]:
    """L2 logistic regressions of every column of y (n x K, 0/1) on x (n x d), all K at once, for each C
    in `cs` (ascending, each fit warm-started from the previous): the objective of scikit-learn's
    LogisticRegression(C), 0.5*|w|^2 + C * sum of log losses with an unpenalised intercept, summed over
    the K separable problems and minimised by one L-BFGS. Returns [(W d x K, b K)] per C.
    One joint fit of 324 personas takes about a second where 324 scikit-learn fits per C took minutes."""
    from scipy.optimize import minimize
    from scipy.special import expit

    n, d = x.shape
    k = y.shape[1]
    y = y.astype(float)
    theta = np.zeros((d + 1) * k)
    out = []
    for c in cs:
        def loss_grad(t):
            w, b = t[: d * k].reshape(d, k), t[d * k:]
            z = x @ w + b
            loss = np.logaddexp(0, z) - y * z  # -log p(y | z), stable
            r = c * (expit(z) - y)
            grad = np.concatenate([(x.T @ r + w).ravel(), r.sum(axis=0)])
            return c * loss.sum() + 0.5 * float((w * w).sum()), grad

        res = minimize(loss_grad, theta, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-6})
        theta = res.x
        out.append((theta[: d * k].reshape(d, k).copy(), theta[d * k:].copy()))
    return out


def classifier(g: PersonaMatrix, test: np.ndarray, x: np.ndarray, seed: int = 0):
    """One L2 logistic regression per persona (question embedding -> correct), fit on train (all
    personas in one joint fit, `fit_logistic_path`); C from C_GRID by the val accuracy of the resulting
    choice (ties: the smaller C). A persona whose train correctness is constant gets that constant
    train rate as its probability."""
    from scipy.special import expit

    train, val = g.mask("train"), g.mask("val")
    if not train.any():
        raise ValueError("the classifier needs train questions")
    y = g.correct[train]
    const = y.min(axis=0) == y.max(axis=0)
    path = np.empty((len(C_GRID), len(g.questions), len(g.personas)))
    path[:, :, const] = y[0, const].astype(float)
    if (~const).any():
        for i, (w, b) in enumerate(fit_logistic_path(x[train], y[:, ~const], C_GRID)):
            path[i][:, ~const] = expit(x @ w + b)

    def probs(c: float) -> np.ndarray:
        return path[C_GRID.index(c)]

    def choice_acc(p: np.ndarray, rows: np.ndarray) -> float:
        idx = np.flatnonzero(rows)
        return float(g.correct[idx, p[idx].argmax(axis=1)].mean())

    if val.any():
        scored = [(choice_acc(p := probs(c), val), c, p) for c in C_GRID]
        best_val = max(s[0] for s in scored)
        acc_val, c, p = next(s for s in scored if s[0] == best_val)
        how = f"C={c:g} chosen on {int(val.sum())} val questions (val accuracy {acc_val:.3f})"
    else:
        c, p = 1.0, probs(1.0)
        how = "C=1 (no val questions)"
    idx = np.flatnonzero(test)
    k = p[idx].argmax(axis=1)
    n_const = int((y.min(axis=0) == y.max(axis=0)).sum())
    counts = pd.Series([g.names[j] for j in k]).value_counts()
    top = ", ".join(f"{n} ({cnt})" for n, cnt in counts.head(3).items())
    return g.correct[idx, k], f"{how}; {n_const} persona(s) constant on train; most chosen: {top}"


def majority_vote(g: PersonaMatrix, test: np.ndarray):
    """The answer most personas predict. Ties: the control's answer if it is among the tied, else the
    lowest option index. Unreadable generated answers (pred -1) do not vote; with no vote at all, the
    question counts as wrong."""
    idx = np.flatnonzero(test)
    out = np.empty(len(idx), dtype=bool)
    n_ties = 0
    for n, i in enumerate(idx):
        votes = g.pred[i][g.pred[i] >= 0]
        if not len(votes):
            out[n] = False
            continue
        vals, counts = np.unique(votes, return_counts=True)
        tied = vals[counts == counts.max()]
        if len(tied) > 1:
            n_ties += 1
        vote = g.control_pred[i] if g.control_pred[i] in tied else tied.min()
        out[n] = vote == g.answers[i]
    return out, (f"answer predicted by most of {len(g.personas)} personas; {n_ties} tie(s), broken by the "
                 "control's answer if tied, else the lowest option index")


def model_pick(g: PersonaMatrix, test: np.ndarray, template: str, picks: Mapping[str, Optional[str]]):
    """Per test question, persona (template, the role the model picked for it); the control where the pick
    is unparsed (None), missing, or not a persona of the grid under `template`."""
    idx = np.flatnonzero(test)
    column = {r: k for k, (t, r) in enumerate(g.keys) if t == template}
    chosen = [picks.get(q) for q in g.questions[idx]]
    k = np.array([column.get(r, -1) if isinstance(r, str) else -1 for r in chosen])
    usable = k >= 0
    out = np.where(usable, g.correct[idx, np.maximum(k, 0)], g.control[idx])
    n_missing = sum(q not in picks for q in g.questions[idx])
    named = pd.Series([r for r in chosen if isinstance(r, str)], dtype=object)
    used = named[named.isin(list(column))].value_counts()
    top = f"most picked: {used.index[0]} ({int(used.iloc[0])})" if len(used) else "no usable pick"
    return out, (f"{len(named)} of {len(idx)} test questions have a parsed pick ({n_missing} without a pick row), "
                 f"{int(usable.sum())} name a role of the grid under {template} ({len(used)} distinct roles; {top}); "
                 "the other questions use the control")


def oracle(g: PersonaMatrix, test: np.ndarray):
    idx = np.flatnonzero(test)
    return g.correct[idx].any(axis=1) | (g.control[idx] == 1), "correct if any persona or the control is (upper bound)"


# --------------------------------------------------------------------------- evaluation


def _similarity(g: PersonaMatrix, texts: pd.DataFrame, df: pd.DataFrame, encoder) -> tuple[np.ndarray, np.ndarray]:
    """(persona x question cosine in matrix column order, question embeddings)."""
    from persona_bench.analysis.mechanisms import embed, question_texts

    t = texts.set_index(["template", "role"])["text"]
    missing = [n for p, n in zip(g.keys, g.names) if p not in t.index]
    if missing:
        raise ValueError(f"texts has no sentence for persona(s) {', '.join(missing)}")
    q = question_texts(df).reindex(g.questions)
    vec = embed([t[p] for p in g.keys] + list(q.values), encoder)
    pv, qv = vec[: len(g.personas)], vec[len(g.personas):]
    return pv @ qv.T, qv


def evaluate_strategies(df: pd.DataFrame, texts: pd.DataFrame, n_boot: int = 2000, seed: int = 0, encoder=None,
                        use_similarity: bool = True,
                        picks: Optional[Mapping[str, Optional[str]]] = None) -> pd.DataFrame:
    """Every strategy scored on the test questions (see the module docstring for the columns).

    df: one model's predictions; texts: (template, role, text), e.g. mechanisms.persona_texts;
    encoder: sentence encoder for mechanisms.embed (None = MiniLM); use_similarity=False leaves out the
    two strategies that need sentence embeddings (most_similar, classifier) and loads no encoder;
    picks: question_id -> the role the model picked for itself (None: unparsed), e.g. from a run's
    self_pick.parquet; adds a model_pick/<template> row per persona template."""
    missing = {"answer", "pred"} - set(df.columns)
    if missing:
        raise ValueError(f"predictions lack column(s) {sorted(missing)}; the strategies need them")
    g = strategy_matrix(df)
    if not len(g.personas):
        raise ValueError("no persona has a row for every question")
    if not g.mask("test").any():
        raise ValueError("no test questions")
    sim, qv = _similarity(g, texts, df, encoder) if use_similarity else (None, None)
    return score_strategies(g, n_boot, seed, sim, qv, picks)


def score_strategies(g: PersonaMatrix, n_boot: int = 2000, seed: int = 0, sim: Optional[np.ndarray] = None,
                     qv: Optional[np.ndarray] = None,
                     picks: Optional[Mapping[str, Optional[str]]] = None) -> pd.DataFrame:
    """evaluate_strategies on a complete matrix: sim (persona x question cosine) and qv (question embeddings)
    add most_similar and classifier (both or neither); picks adds model_pick/<template>."""
    test = g.mask("test")
    if not test.any():
        raise ValueError("no test questions")
    ctrl = g.control[test].astype(float)
    boot = np.random.default_rng(seed).integers(0, int(test.sum()), size=(n_boot, int(test.sum())))
    reselected = strategy_boot(g, n_boot, seed)
    note = f" [split of {g.split_from_hash} question(s) from the question_id hash]" if g.split_from_hash else ""

    def row(name, correct, detail, spread=None, p=None, fixed=""):
        s = np.asarray(correct, dtype=float)
        d = reselected.get(name)
        if d is None:
            d = s[boot].mean(axis=1) - ctrl[boot].mean(axis=1)
        lo, hi = np.percentile(d, [2.5, 97.5])
        return {"strategy": name, "accuracy": _r(s.mean()), "control_accuracy": _r(ctrl.mean()),
                "delta": _r(s.mean() - ctrl.mean()), "ci_low": _r(lo), "ci_high": _r(hi),
                "interval": RESELECTED if name in reselected else TEST_ONLY + fixed,
                "p": _r(mcnemar_exact(s.astype(bool), ctrl.astype(bool)) if p is None else p),
                "test": MCNEMAR if p is None else PAIRED_T,
                "n_test": int(test.sum()), "spread": _r(spread) if spread is not None else None,
                "detail": detail + note}

    expected, detail = random_persona(g, test)
    rows = [row("random", expected, detail, spread=np.sqrt(np.sum(expected * (1 - expected))) / len(expected),
                p=random_test(expected, ctrl))]
    rows.append(row("best_on_train", *best_on_train(g, test)))
    rows.append(row("best_per_subject", *best_per_subject(g, test)))
    rows.append(row("best_in_domain", *best_per_subject(g, test, in_domain_only=True)))
    if sim is not None:
        rows.append(row("most_similar", *most_similar(g, test, sim)))
        rows.append(row("classifier", *classifier(g, test, qv, seed), fixed=" (classifier fit kept fixed)"))
    rows.append(row("majority_vote", *majority_vote(g, test)))
    if picks is not None:
        for t in dict.fromkeys(t for t, _ in g.keys):
            rows.append(row(f"model_pick/{t}", *model_pick(g, test, t, picks)))
    rows.append(row("oracle", *oracle(g, test)))
    out = pd.DataFrame(rows, columns=COLUMNS)
    if g.dropped:
        out.attrs["dropped_personas"] = list(g.dropped)
    return out
