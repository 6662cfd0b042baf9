"""Figures of the report, in the spirit of the paper (matplotlib, headless). Every function takes
tables the analysis made and returns a Figure; `save` writes it as PNG and closes it.

Differences to the control are shown in accuracy points (x100) with their 95% intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SIGNIFICANT = "#c0392b"
PLAIN = "#4a6fa5"


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.2f}"


def _points(x) -> np.ndarray:
    return 100 * np.asarray(pd.to_numeric(x, errors="coerce"), dtype=float)


def _interval_bars(ax, labels, est, lo, hi, colors=None, horizontal=True):
    est, lo, hi = _points(est), _points(lo), _points(hi)
    err = np.vstack([np.nan_to_num(est - lo), np.nan_to_num(hi - est)])
    pos = np.arange(len(labels))
    colors = colors or [PLAIN] * len(labels)
    if horizontal:
        ax.barh(pos, est, xerr=err, color=colors, alpha=0.85, capsize=3)
        ax.set_yticks(pos, labels)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("difference to control (accuracy points, 95% CI)")
        ax.invert_yaxis()
    else:
        ax.bar(pos, est, yerr=err, color=colors, alpha=0.85, capsize=3)
        ax.set_xticks(pos, labels, rotation=30, ha="right")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel("difference to control (points, 95% CI)")


def factor_panels(tables: dict[str, pd.DataFrame], level: str = "level", title: str = ""):
    """One panel per factor (template, category, gender, domain match...): each level's difference to control."""
    tables = {k: t for k, t in tables.items() if t is not None and len(t)}
    fig, axes = plt.subplots(1, max(len(tables), 1), figsize=(4.2 * max(len(tables), 1), 3.8), squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        _interval_bars(ax, [str(v) for v in t[level]], t["delta"], t["ci_low"], t["ci_high"])
        ax.set_title(name)
        if ax is not axes[0][0]:
            ax.set_xlabel("")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def persona_deltas(personas: pd.DataFrame, title: str = ""):
    """Every persona's difference to control, sorted, with its interval; significant ones (after the
    multiple-comparison correction) in red; and the distribution of the differences."""
    t = personas.sort_values("delta").reset_index(drop=True)
    sig = t["significant"].fillna(False).astype(bool).to_numpy()
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(t))
    est, lo, hi = _points(t["delta"]), _points(t["ci_low"]), _points(t["ci_high"])
    ax.vlines(x, lo, hi, color=np.where(sig, SIGNIFICANT, "#9fb3cf"), lw=1)
    ax.scatter(x, est, s=10, c=np.where(sig, SIGNIFICANT, PLAIN), zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("personas, sorted by difference to control")
    ax.set_ylabel("difference to control (points, 95% CI)")
    if len(t) <= 40:
        ax.set_xticks(x, [f"{r} ({tp})" for tp, r in zip(t["template"], t["role"])], rotation=70, ha="right",
                      fontsize=7)
    ax.set_title(f"{int(sig.sum())} of {len(t)} personas differ significantly from control (red)")
    hx.hist(est[np.isfinite(est)], bins=min(30, max(5, len(t) // 4)), color=PLAIN, orientation="horizontal")
    hx.axhline(0, color="black", lw=0.8)
    hx.set_xlabel("personas")
    hx.set_ylim(ax.get_ylim())
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def mechanism_scatter(points: pd.DataFrame, measures: dict[str, str], correlations: Optional[pd.DataFrame] = None,
                      title: str = ""):
    """Each mechanism measure (x) against the difference to control (y), one point per role (both averaged over
    the role's templates, as the correlation is computed), with the correlation and its interval in the panel
    title. `measures` maps column -> axis label."""
    cols = [c for c in measures if c in points and points[c].notna().any()]
    if "role" in points:
        points = points.groupby("role")[[c for c in cols + ["delta"] if c in points]].mean().reset_index()
    fig, axes = plt.subplots(1, max(len(cols), 1), figsize=(4.2 * max(len(cols), 1), 3.8), squeeze=False)
    for ax, col in zip(axes[0], cols):
        ok = points[col].notna() & points["delta"].notna()
        ax.scatter(points.loc[ok, col], _points(points.loc[ok, "delta"]), s=12, color=PLAIN, alpha=0.7)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel(measures[col])
        ax.set_ylabel("difference to control (points, role mean)")
        row = correlations[correlations["measure"] == col] if correlations is not None and len(correlations) else None
        if row is not None and len(row):
            r = row.iloc[0]
            ax.set_title(f"r = {_fmt(r['pearson_r'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def strategies(table: pd.DataFrame, title: str = ""):
    """Persona-selection strategies on the test questions: difference to control with intervals."""
    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(t) + 1.5))
    sig = t["significant"].fillna(False).astype(bool) if "significant" in t else pd.Series(False, index=t.index)
    colors = [SIGNIFICANT if s else PLAIN for s in sig]  # corrected p only (analysis.families)
    _interval_bars(ax, list(t["strategy"]), t["delta"], t["ci_low"], t["ci_high"], colors)
    ax.set_title(title or "persona selection on the test questions (red: significant after correction)")
    fig.tight_layout()
    return fig


def role_model_heatmap(deltas: pd.DataFrame, title: str = ""):
    """Roles (rows) x models (columns): difference to control, mean over templates, in points."""
    d = deltas.copy()
    d = d.loc[d.mean(axis=1).sort_values(ascending=False).index]
    values = _points(d.to_numpy().ravel()).reshape(d.shape)
    lim = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * d.shape[1], 1.2 + 0.16 * d.shape[0]))
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(d.shape[1]), d.columns, rotation=30, ha="right")
    ax.set_yticks(range(d.shape[0]), d.index, fontsize=max(4, min(9, 400 // max(d.shape[0], 1))))
    fig.colorbar(im, ax=ax, label="difference to control (points)")
    ax.set_title(title or "roles x models")
    fig.tight_layout()
    return fig


def logit_vs_generation(personas: pd.DataFrame, pairs: pd.DataFrame, title: str = ""):
    """One panel per (logit scoring, generation) pair: each persona's difference to control under the logits
    (x) and under generation (y), in points; the y = x line and both zero axes; personas whose two
    differences have the same sign in blue, opposite signs in red, a zero under either in grey."""
    names = list(pairs["pair"])
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.6 * max(len(names), 1), 4.4), squeeze=False)
    colors = {"same": (PLAIN, "same sign"), "opposite": (SIGNIFICANT, "opposite signs"), "zero": ("#999999", "zero under one")}
    for ax, (_, p) in zip(axes[0], pairs.iterrows()):
        t = personas[personas["pair"] == p["pair"]]
        x, y = _points(t["delta_logit"]), _points(t["delta_generate"])
        for sign, (color, label) in colors.items():
            m = (t["sign"] == sign).to_numpy()
            if m.any():
                ax.scatter(x[m], y[m], s=14, color=color, alpha=0.75, label=f"{label} ({int(m.sum())})", zorder=3)
        finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)], [0.0]])
        lim = 1.08 * max(np.abs(finite).max(), 0.5)
        ax.plot([-lim, lim], [-lim, lim], color="#555555", lw=0.8, ls="--", label="y = x")
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel(f"difference to control, {p['logit_scoring']} logits (points)")
        ax.set_ylabel("difference to control, generated answers (points)")
        ax.set_title(f"{p['pair']}\nsame sign {_fmt(p['share_same_sign'])}, Spearman {_fmt(p['spearman'])}, "
                     f"agreement {_fmt(p['agreement'])}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or "persona effects: logit scoring against generation")
    fig.tight_layout()
    return fig
