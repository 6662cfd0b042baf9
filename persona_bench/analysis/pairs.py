"""Personas compared in pairs on the same questions: the same role as speaker and as audience, and a female
role against its male counterpart (mother / father). Descriptive: each pair's difference with a paired bootstrap
95% interval over questions, unadjusted for the number of pairs (the report says so).

- template_pairs(grid, n_boot, seed): per role and per (speaker-form, audience-form) template pair present
  (speaker/audience, imagine_speaker/imagine_audience: a template whose name has "audience" where another's has
  "speaker"): speaker_template, audience_template, role, n_questions, speaker_delta, audience_delta (each
  persona's difference to control), difference (audience minus speaker), ci_low, ci_high.
- gender_pairs(grid, n_boot, seed): per pair of inputs.roles.gendered_pairs (the roles' gender facts) and per
  template, then over all templates (template "all templates": the mean of the two roles' personas):
  template, female, male, pair ("mother / father"), n_questions, female_delta, male_delta, difference (female
  minus male), ci_low, ci_high.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from persona_bench.analysis.matrix import PersonaMatrix
from persona_bench.analysis.stats import boot_means, boot_weights, percentile_ci
from persona_bench.inputs.roles import gendered_pairs

ALL_TEMPLATES = "all templates"


def _mean(a: np.ndarray, axis: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _paired(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> dict:
    """Q x m per-question values of two sides: each side's mean, their difference (b - a) and its interval."""
    d = b - a
    lo, hi = percentile_ci(boot_means(d, boot_weights(len(d), n_boot, seed))) if d.shape[1] else ([], [])
    return {"n_questions": (~np.isnan(d)).sum(axis=0), "a": _mean(a), "b": _mean(b), "difference": _mean(d),
            "ci_low": lo, "ci_high": hi}


def template_pairs(grid: PersonaMatrix, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every role as speaker and as audience: both differences to control and audience minus speaker."""
    cols = ["speaker_template", "audience_template", "role", "n_questions", "speaker_delta", "audience_delta",
            "difference", "ci_low", "ci_high"]
    index = {k: i for i, k in enumerate(grid.keys)}
    templates = sorted(dict.fromkeys(grid.personas["template"]), key=lambda t: (len(t), t))  # speaker first
    d = grid.diff
    frames = []
    for s in templates:
        a = s.replace("speaker", "audience")
        if "speaker" not in s or a not in templates:
            continue
        roles = [r for t, r in grid.keys if t == s and (a, r) in index]
        if not roles:
            continue
        r = _paired(d[:, [index[(s, x)] for x in roles]], d[:, [index[(a, x)] for x in roles]], n_boot, seed)
        frames.append(pd.DataFrame({"speaker_template": s, "audience_template": a, "role": roles,
                                    "n_questions": r["n_questions"], "speaker_delta": r["a"],
                                    "audience_delta": r["b"], "difference": r["difference"],
                                    "ci_low": r["ci_low"], "ci_high": r["ci_high"]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def gender_pairs(grid: PersonaMatrix, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Female roles against their male counterparts, per template and over all templates."""
    cols = ["template", "female", "male", "pair", "n_questions", "female_delta", "male_delta", "difference",
            "ci_low", "ci_high"]
    p = grid.personas
    genders = dict(zip(p["role"], p["gender"]))
    pairs = gendered_pairs(genders)
    if not pairs:
        return pd.DataFrame(columns=cols)
    index = {k: i for i, k in enumerate(grid.keys)}
    d = grid.diff
    templates = list(dict.fromkeys(p["template"]))
    rows, fem, mal = [], [], []
    for t in [*templates, ALL_TEMPLATES]:
        for f, m in pairs:
            ts = templates if t == ALL_TEMPLATES else [t]
            kf = [index[(x, f)] for x in ts if (x, f) in index and (x, m) in index]
            km = [index[(x, m)] for x in ts if (x, f) in index and (x, m) in index]
            if not kf:
                continue
            rows.append((t, f, m))
            fem.append(_mean(d[:, kf], axis=1))
            mal.append(_mean(d[:, km], axis=1))
    if not rows:
        return pd.DataFrame(columns=cols)
    r = _paired(np.column_stack(mal), np.column_stack(fem), n_boot, seed)
    out = pd.DataFrame(rows, columns=["template", "female", "male"])
    out["pair"] = out["female"] + " / " + out["male"]
    out["n_questions"] = r["n_questions"]
    out["female_delta"], out["male_delta"] = r["b"], r["a"]
    out["difference"], out["ci_low"], out["ci_high"] = r["difference"], r["ci_low"], r["ci_high"]
    return out[cols]
