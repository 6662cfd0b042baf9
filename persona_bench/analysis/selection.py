"""Selection-aware intervals for the strategies that choose a persona on the train questions (pure numpy).

An interval over the test questions alone holds the chosen persona fixed: it says how well *this* choice does,
not how well the strategy does, which also depends on which train questions happened to be drawn. Here each
bootstrap resample draws the train questions and the test questions again (each split resampled within itself,
with replacement, to its own size), re-runs the choice on the resampled train questions exactly as the strategy
does (same ties), and scores that choice on the resampled test questions against the control on the same
resampled questions. The 2.5% and 97.5% quantiles of those differences are the interval.

The strategies covered (the ones whose choice depends on the train questions and is cheap to repeat):
best_on_train, best_per_subject and best_in_domain (`strategy_boot`). Strategies without a training step
(random, most_similar, majority_vote, model_pick, oracle) have nothing to re-select: the test bootstrap is already
their full uncertainty. The classifier is kept fixed (a fit takes most of a minute at the paper's size, and 2,000
refits would take a day): its interval is conditional on the fitted classifier (see strategies.py).

Ties are broken as strategies._best does: the higher train accuracy, then (per subject) the higher overall train
accuracy, then the first persona in column order.
"""

from __future__ import annotations

import numpy as np

from persona_bench.analysis.matrix import PersonaMatrix
from persona_bench.analysis.stats import boot_weights

SELECTED = ("best_on_train", "best_per_subject", "best_in_domain")
TIE = 1e-9  # weight of the overall train accuracy in the per-subject key (accuracies differ by >= 1/n_train)


def resample_weights(n_train: int, n_test: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot x n_train, n_boot x n_test) resampling counts, each split resampled within itself."""
    return boot_weights(n_train, n_boot, seed + 1), boot_weights(n_test, n_boot, seed + 2)


def _score(choice_correct: np.ndarray, w_test: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """Per resample: weighted mean of the chosen correctness (n_boot x n_test) minus the control's."""
    n = w_test.shape[1]
    return ((w_test * choice_correct).sum(axis=1) - w_test @ ctrl) / n


def best_on_train_boot(g: PersonaMatrix, w_train: np.ndarray, w_test: np.ndarray) -> np.ndarray:
    """n_boot differences to control of best_on_train re-chosen on each resample."""
    train, test = g.mask("train"), g.mask("test")
    k = (w_train @ g.correct[train].astype(np.float32)).argmax(axis=1)  # counts: ties -> first persona
    test_acc = w_test @ g.correct[test].astype(np.float32)  # n_boot x K counts
    picked = test_acc[np.arange(len(k)), k]
    return (picked - w_test @ g.control[test].astype(np.float32)) / w_test.shape[1]


def best_per_subject_boot(g: PersonaMatrix, w_train: np.ndarray, w_test: np.ndarray) -> dict[str, np.ndarray]:
    """n_boot differences to control of best_per_subject and best_in_domain re-chosen on each resample
    (a subject with no train question in a resample uses the overall train accuracy, as the strategy does)."""
    train, test = g.mask("train"), g.mask("test")
    c_train = g.correct[train].astype(np.float32)
    s_train, s_test = g.subjects[train], g.subjects[test]
    c_test, ctrl = g.correct[test], g.control[test]
    n_boot = w_train.shape[0]
    overall = (w_train @ c_train).astype(np.float64) / w_train.shape[1]
    chosen = {"best_per_subject": np.zeros((n_boot, len(s_test))), "best_in_domain": np.zeros((n_boot, len(s_test)))}
    for s in sorted(set(s_test)):
        rows = s_train == s
        cnt = w_train[:, rows].sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = (w_train[:, rows] @ c_train[rows]).astype(np.float64) / cnt[:, None]
        acc = np.where(cnt[:, None] > 0, acc, overall)
        key = acc + TIE * overall
        cols = np.flatnonzero(s_test == s)
        chosen["best_per_subject"][:, cols] = c_test[cols][:, key.argmax(axis=1)].T
        allowed = g.in_domain[g.subjects == s].any(axis=0)
        if allowed.any():
            k = np.where(allowed, key, -np.inf).argmax(axis=1)
            chosen["best_in_domain"][:, cols] = c_test[cols][:, k].T
        else:  # no in-domain persona: the control
            chosen["best_in_domain"][:, cols] = ctrl[cols]
    return {name: _score(c, w_test, ctrl) for name, c in chosen.items()}


def strategy_boot(g: PersonaMatrix, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """strategy -> n_boot selection-aware differences to control, for every strategy in SELECTED ({} without
    train or test questions)."""
    n_train, n_test = int(g.mask("train").sum()), int(g.mask("test").sum())
    if not n_train or not n_test:
        return {}
    w_train, w_test = resample_weights(n_train, n_test, n_boot, seed)
    return {"best_on_train": best_on_train_boot(g, w_train, w_test), **best_per_subject_boot(g, w_train, w_test)}
