"""Persona effects by subject: on each subject's questions, each template's personas against the control.
Descriptive: a subject holds tens of questions, so each cell's interval is wide (the report shows n).

- subject_template(grid): one row per (subject, template): subject, template, n_questions, n_personas,
  delta (mean over the subject's questions of the template's mean persona outcome minus the control's),
  ci_low, ci_high (t interval over the subject's questions of that per-question difference; NaN below 2).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from persona_bench.analysis.matrix import PersonaMatrix


def subject_template(grid: PersonaMatrix) -> pd.DataFrame:
    """Each template's mean difference to control on each subject's questions, with a t interval."""
    templates = list(dict.fromkeys(grid.personas["template"]))
    subjects = sorted(set(grid.subjects))
    d = grid.diff
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_q = {t: np.nanmean(d[:, (grid.personas["template"] == t).to_numpy()], axis=1) for t in templates}
        for s in subjects:
            qs = grid.subjects == s
            for t in templates:
                v = per_q[t][qs]
                v = v[~np.isnan(v)]
                n = len(v)
                mean = float(v.mean()) if n else np.nan
                half = (float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n)) if n >= 2 else np.nan)
                rows.append((s, t, n, int((grid.personas["template"] == t).sum()), mean, mean - half, mean + half))
    return pd.DataFrame(rows, columns=["subject", "template", "n_questions", "n_personas", "delta", "ci_low",
                                       "ci_high"])
