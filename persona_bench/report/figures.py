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


def points(x) -> np.ndarray:
    return 100 * np.asarray(pd.to_numeric(x, errors="coerce"), dtype=float)


def _interval_bars(ax, labels, est, lo, hi, colors=None, horizontal=True):
    est, lo, hi = points(est), points(lo), points(hi)
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


EXTREMES = 10  # personas labelled at each end of the ranked figure
LABEL_ALL = 40  # up to this many personas, every one is labelled


def persona_name(template, role) -> str:
    return f"{role} ({template})"


def _forest(ax, y, est, lo, hi, sig):
    """Points with horizontal 95% intervals at rows y; significant ones red."""
    ax.hlines(y, lo, hi, color=np.where(sig, SIGNIFICANT, "#8aa2c8"), lw=1.6)
    ax.scatter(est, y, s=22, c=np.where(sig, SIGNIFICANT, PLAIN), zorder=3)


def persona_deltas(personas: pd.DataFrame, title: str = "", extremes: int = EXTREMES, label_all: int = LABEL_ALL):
    """Every persona's difference to control, ranked, with its 95% interval; significant ones (after the
    multiple-comparison correction) in red. Up to `label_all` personas every one is labelled; above, the
    `extremes` best and worst are labelled and the rest drawn as the distribution of their differences (left),
    beside all personas ranked with their intervals as a band (right)."""
    t = personas.sort_values("delta", ascending=False).reset_index(drop=True)
    sig = t["significant"].fillna(False).astype(bool).to_numpy()
    est, lo, hi = points(t["delta"]), points(t["ci_low"]), points(t["ci_high"])
    names = [persona_name(tp, r) for tp, r in zip(t["template"], t["role"])]
    head = f"{int(sig.sum())} of {len(t)} personas differ significantly from control (red, after correction)"
    if len(t) <= label_all:
        fig, ax = plt.subplots(figsize=(9, 1.2 + 0.27 * len(t)))
        y = np.arange(len(t))
        _forest(ax, y, est, lo, hi, sig)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("difference to control (accuracy points, 95% CI)")
        ax.set_title(head, fontsize=10)
        fig.suptitle(title)
        fig.tight_layout()
        return fig
    k = extremes
    rest = slice(k, len(t) - k)
    band = 5  # rows the distribution of the middle personas takes
    fig, (ax, rx) = plt.subplots(1, 2, figsize=(13, 1.6 + 0.27 * (2 * k + band)), gridspec_kw={"width_ratios": [1.5, 1]})
    top, bottom = np.arange(k), np.arange(k + band, 2 * k + band)
    _forest(ax, top, est[:k], lo[:k], hi[:k], sig[:k])
    _forest(ax, bottom, est[-k:], lo[-k:], hi[-k:], sig[-k:])
    mid = est[rest][np.isfinite(est[rest])]
    centre = k + (band - 1) / 2
    if len(mid) > 1:
        parts = ax.violinplot(mid, positions=[centre], vert=False, widths=band - 0.6, showextrema=False)
        for b in parts["bodies"]:
            b.set_facecolor("#c9d6ea")
            b.set_alpha(0.9)
        q1, med, q3 = np.percentile(mid, [25, 50, 75])
        ax.hlines(centre, q1, q3, color=PLAIN, lw=4)
        ax.scatter([med], [centre], color="white", edgecolor=PLAIN, s=30, zorder=4)
        jitter = np.random.default_rng(0).uniform(-0.35, 0.35, len(mid)) * (band - 1) / 2
        ax.scatter(mid, centre + jitter, s=3, color=PLAIN, alpha=0.35, zorder=2)
    n_mid = len(t) - 2 * k
    ax.set_yticks([*top, centre, *bottom], [*names[:k], f"{n_mid} other personas\n(distribution, box: quartiles)",
                                           *names[-k:]], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("difference to control (accuracy points, 95% CI)")
    ax.set_title(f"the {k} best and {k} worst personas; " + head, fontsize=9)
    x = np.arange(1, len(t) + 1)
    rx.fill_between(x, lo, hi, color="#c9d6ea", lw=0, label="95% interval")
    rx.plot(x, est, color=PLAIN, lw=1.2, label="difference")
    ends = np.r_[0:k, len(t) - k:len(t)]
    rx.scatter(x[ends], est[ends], s=12, c=np.where(sig[ends], SIGNIFICANT, "#e67e22"), zorder=3,
               label=f"the {k} best and worst (labelled left)")
    if sig.any():
        rx.scatter(x[sig], est[sig], s=12, color=SIGNIFICANT, zorder=4)
    rx.axhline(0, color="black", lw=0.8)
    rx.set_xlabel("rank (1 = largest difference)")
    rx.set_ylabel("difference to control (points)")
    rx.set_title(f"all {len(t)} personas ranked", fontsize=9)
    rx.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def mechanism_scatter(table: pd.DataFrame, measures: dict[str, str], correlations: Optional[pd.DataFrame] = None,
                      title: str = ""):
    """Each mechanism measure (x) against the difference to control (y), one point per role (both averaged over
    the role's templates, as the correlation is computed), with the correlation and its interval in the panel
    title. `measures` maps column -> axis label."""
    cols = [c for c in measures if c in table and table[c].notna().any()]
    if "role" in table:
        table = table.groupby("role")[[c for c in cols + ["delta"] if c in table]].mean().reset_index()
    fig, axes = plt.subplots(1, max(len(cols), 1), figsize=(4.2 * max(len(cols), 1), 3.8), squeeze=False)
    for ax, col in zip(axes[0], cols):
        ok = table[col].notna() & table["delta"].notna()
        ax.scatter(table.loc[ok, col], points(table.loc[ok, "delta"]), s=12, color=PLAIN, alpha=0.7)
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
    _interval_bars(ax, [str(s).replace("_", " ") for s in t["strategy"]], t["delta"], t["ci_low"], t["ci_high"],
                   colors)
    ax.set_title(title or "persona selection on the test questions (red: significant after correction)")
    fig.tight_layout()
    return fig


def role_model_heatmap(deltas: pd.DataFrame, title: str = "", extremes: int = 20):
    """Roles (rows) x models (columns): difference to control, mean over templates, in points; above
    2 x `extremes` roles, the `extremes` with the largest and the smallest mean over models only."""
    d = deltas.copy()
    d = d.loc[d.mean(axis=1).sort_values(ascending=False).index]
    n_roles = len(d)
    if n_roles > 2 * extremes:
        d = pd.concat([d.head(extremes), d.tail(extremes)])
    values = points(d.to_numpy().ravel()).reshape(d.shape)
    lim = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * d.shape[1], 1.2 + 0.16 * d.shape[0]))
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(d.shape[1]), d.columns, rotation=30, ha="right")
    ax.set_yticks(range(d.shape[0]), d.index, fontsize=8)
    if n_roles > len(d):
        ax.axhline(extremes - 0.5, color="black", lw=2)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, label="difference to control (points)")
    ax.set_title(title or (f"roles x models: the {extremes} highest and {extremes} lowest of {n_roles} roles "
                           "(mean over models)" if n_roles > len(d) else "roles x models"), fontsize=9)
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
        x, y = points(t["delta_logit"]), points(t["delta_generate"])
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
