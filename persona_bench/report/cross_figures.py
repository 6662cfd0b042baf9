"""Figures that set the models side by side (matplotlib, headless), legible at the paper's scale (3 models x
648 personas): the distributions of persona effects, the factors by model, audience against speaker per role,
gendered pairs and subjects x templates. Each takes {model: table of the analysis} and returns a Figure;
everything is in accuracy points."""

from __future__ import annotations

from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from persona_bench.report.figures import PLAIN, SIGNIFICANT, points  # noqa: E402

MODEL_COLORS = ["#4a6fa5", "#e67e22", "#2e8b57", "#8e44ad", "#7f8c8d", "#c0392b"]
FACTOR_TITLES = {"template": "template", "role_category": "role category", "gender": "gender"}


def _color(i: int) -> str:
    return MODEL_COLORS[i % len(MODEL_COLORS)]


def distributions(personas: dict[str, pd.DataFrame], title: str = ""):
    """One violin per model of its personas' differences to control, every persona a dot coloured by
    template; significant personas (after correction) ringed red; n, median and the share above 0 below."""
    models = list(personas)
    templates = sorted({t for p in personas.values() for t in p["template"]}, key=lambda t: (len(t), t))
    tcolor = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(templates)}
    fig, ax = plt.subplots(figsize=(max(6.0, 2.6 * len(models) + 2), 4.8))
    rng = np.random.default_rng(0)
    for i, m in enumerate(models):
        p = personas[m]
        est = points(p["delta"])
        ok = np.isfinite(est)
        if ok.sum() > 1:
            v = ax.violinplot(est[ok], positions=[i], widths=0.8, showextrema=False)
            for b in v["bodies"]:
                b.set_facecolor("#dde5f1")
                b.set_alpha(1)
        x = i + rng.uniform(-0.25, 0.25, len(p))
        ax.scatter(x, est, s=5, c=[tcolor[t] for t in p["template"]], alpha=0.55, zorder=2)
        sig = p["significant"].fillna(False).astype(bool).to_numpy() if "significant" in p else np.zeros(len(p), bool)
        if sig.any():
            ax.scatter(x[sig], est[sig], s=30, facecolors="none", edgecolors=SIGNIFICANT, lw=1.2, zorder=3)
        if ok.any():
            med = np.median(est[ok])
            ax.hlines(med, i - 0.35, i + 0.35, color="black", lw=1.5, zorder=4)
            ax.annotate(f"n = {ok.sum()}, median {med:+.1f}\n{100 * np.mean(est[ok] > 0):.0f}% above 0, "
                        f"{int(sig.sum())} significant", (i, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(models)), models)
    ax.set_xlim(-0.6, len(models) - 0.4)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo - 0.18 * (hi - lo), hi)  # room for the notes
    ax.set_ylabel("difference to control (accuracy points)")
    for t in templates:
        ax.scatter([], [], s=20, color=tcolor[t], label=t)
    ax.scatter([], [], s=30, facecolors="none", edgecolors=SIGNIFICANT, label="significant (corrected)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title or "persona effects per model: every persona a dot, the line its median", fontsize=10)
    fig.tight_layout()
    return fig


def factors_by_model(groups: dict[str, dict[str, pd.DataFrame]], factors=("template", "role_category", "gender"),
                     title: str = ""):
    """One panel per factor: each level's difference to control (mean of its personas, paired bootstrap 95%
    interval), the models dodged in colour. `groups`: {model: analysis groups}."""
    models = list(groups)
    factors = [f for f in factors if any(f in g and len(g[f]) for g in groups.values())]
    levels = {f: list(dict.fromkeys(lv for g in groups.values() if f in g for lv in g[f]["level"])) for f in factors}
    height = 1.6 + 0.32 * max((len(v) for v in levels.values()), default=1) * max(1, len(models)) ** 0.5
    fig, axes = plt.subplots(1, max(len(factors), 1), figsize=(4.6 * max(len(factors), 1), height), squeeze=False)
    step = 0.8 / max(len(models), 1)
    for ax, f in zip(axes[0], factors):
        y0 = np.arange(len(levels[f]))
        for i, m in enumerate(models):
            t = groups[m].get(f)
            if t is None or not len(t):
                continue
            t = t.set_index("level").reindex(levels[f])
            y = y0 - 0.4 + step * (i + 0.5)
            est, lo, hi = points(t["delta"]), points(t["ci_low"]), points(t["ci_high"])
            ax.hlines(y, lo, hi, color=_color(i), lw=1.6)
            ax.scatter(est, y, color=_color(i), s=22, zorder=3, label=m)
        ax.set_yticks(y0, [str(v) for v in levels[f]], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(FACTOR_TITLES.get(f, f), fontsize=10)
        ax.set_xlabel("difference to control (points, 95% CI)", fontsize=8)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="model")
    fig.suptitle(title or "factors across models: each level's personas against control")
    fig.tight_layout()
    return fig


def _label_gaps(ax, x, y, names, label: int, lim: float):
    """Name the `label` roles furthest above the diagonal in a column in the upper-left corner and the `label`
    furthest below it in the lower-right corner, each with a thin line to its point: names never overlap."""
    gap = y - x
    order = [i for i in np.argsort(gap) if np.isfinite(gap[i])]
    for side, picks in ((1, order[::-1][:label]), (-1, order[:label])):
        for k, i in enumerate(picks):
            ax.annotate(str(names[i]), (x[i], y[i]), xytext=(-side * 0.95 * lim, side * (0.92 - 0.1 * k) * lim),
                        fontsize=7, ha="left" if side > 0 else "right", va="center",
                        arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5})


def audience_vs_speaker(pairs: dict[str, pd.DataFrame], label: int = 3, title: str = ""):
    """A panel per model and template pair: each role's difference to control as speaker (x) and as audience
    (y), the line y = x; roles whose audience-minus-speaker interval excludes 0 (unadjusted) in red; the
    `label` roles with the largest gap each way named."""
    models = [m for m, t in pairs.items() if len(t)]
    kinds = list(dict.fromkeys((s, a) for m in models for s, a in zip(pairs[m]["speaker_template"],
                                                                        pairs[m]["audience_template"])))
    fig, axes = plt.subplots(max(len(kinds), 1), max(len(models), 1), squeeze=False,
                             figsize=(4.4 * max(len(models), 1), 4.3 * max(len(kinds), 1)))
    allv = np.concatenate([points(pairs[m][c]) for m in models for c in ("speaker_delta", "audience_delta")] or [[0]])
    allv = allv[np.isfinite(allv)]
    lim = 1.08 * max(np.abs(allv).max() if len(allv) else 1, 0.5)
    for col, m in enumerate(models):
        for row, (s, a) in enumerate(kinds):
            ax = axes[row][col]
            t = pairs[m][(pairs[m]["speaker_template"] == s) & (pairs[m]["audience_template"] == a)]
            x, y = points(t["speaker_delta"]), points(t["audience_delta"])
            gap = ((t["ci_low"] > 0) | (t["ci_high"] < 0)).to_numpy()
            ax.scatter(x[~gap], y[~gap], s=12, color=PLAIN, alpha=0.6)
            ax.scatter(x[gap], y[gap], s=16, color=SIGNIFICANT, alpha=0.85)
            ax.plot([-lim, lim], [-lim, lim], color="#555555", lw=0.8, ls="--")
            ax.axhline(0, color="black", lw=0.6)
            ax.axvline(0, color="black", lw=0.6)
            _label_gaps(ax, x, y, list(t["role"]), label, lim)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xlabel(f"as speaker, {s} (points)", fontsize=8)
            ax.set_ylabel(f"as audience, {a} (points)", fontsize=8)
            ax.set_title(f"{m}: {len(t)} roles, {int(gap.sum())} in red", fontsize=9)
    fig.suptitle(title or "audience versus speaker per role (each dot a role; above the dashed line the role helps "
                 "more as audience; red: the gap's interval excludes 0)", fontsize=10)
    fig.tight_layout()
    return fig


def gender_pairs(pairs: dict[str, pd.DataFrame], template: Optional[str] = "all templates", title: str = ""):
    """Each gendered pair's difference, female minus male role on the same questions (paired bootstrap 95%
    interval), one row per pair, the models dodged in colour."""
    models = [m for m, t in pairs.items() if len(t)]
    rows = {m: pairs[m][pairs[m]["template"] == template] for m in models}
    names = list(dict.fromkeys(n for t in rows.values() for n in t["pair"]))
    fig, ax = plt.subplots(figsize=(8.5, 1.5 + 0.34 * max(len(names), 1) * max(1, len(models)) ** 0.5))
    step = 0.8 / max(len(models), 1)
    y0 = np.arange(len(names))
    for i, m in enumerate(models):
        t = rows[m].set_index("pair").reindex(names)
        y = y0 - 0.4 + step * (i + 0.5)
        ax.hlines(y, points(t["ci_low"]), points(t["ci_high"]), color=_color(i), lw=1.6)
        ax.scatter(points(t["difference"]), y, color=_color(i), s=22, zorder=3, label=m)
    ax.set_yticks(y0, names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("female role minus male role (accuracy points, 95% CI, same questions)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="model")
    ax.set_title(title or f"gendered pairs ({template}): right of 0 the female role does better", fontsize=10)
    fig.tight_layout()
    return fig


def subject_heatmap(tables: dict[str, pd.DataFrame], title: str = ""):
    """A panel per model: subjects (rows, with their number of questions) x templates (columns), each
    template's personas against control on the subject's questions, in points, written in the cells."""
    models = [m for m, t in tables.items() if len(t)]
    subjects = sorted({s for m in models for s in tables[m]["subject"]})
    mean = pd.concat([tables[m] for m in models]).groupby("subject")["delta"].mean()
    subjects = sorted(subjects, key=lambda s: -mean.get(s, 0))
    templates = sorted({t for m in models for t in tables[m]["template"]}, key=lambda t: (len(t), t))
    grids = {m: tables[m].pivot(index="subject", columns="template", values="delta").reindex(index=subjects,
                                                                                              columns=templates)
             for m in models}
    n = tables[models[0]].groupby("subject")["n_questions"].max().reindex(subjects) if models else pd.Series()
    vals = np.concatenate([points(g.to_numpy().ravel()) for g in grids.values()] or [[0]])
    vals = vals[np.isfinite(vals)]
    lim = max(np.percentile(np.abs(vals), 95) if len(vals) else 1, 0.5)
    fig, axes = plt.subplots(1, max(len(models), 1), squeeze=False, layout="constrained",
                             figsize=(2.4 + (0.75 * len(templates) + 0.4) * max(len(models), 1),
                                      1.6 + 0.21 * len(subjects)))
    for j, (ax, m) in enumerate(zip(axes[0], models)):
        v = points(grids[m].to_numpy().ravel()).reshape(grids[m].shape)
        im = ax.imshow(v, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for (r, c), x in np.ndenumerate(v):
            if np.isfinite(x):
                ax.text(c, r, f"{x:+.0f}" if abs(x) >= 9.95 else f"{x:+.1f}", ha="center", va="center",
                        fontsize=6.5, color="white" if abs(x) > 0.65 * lim else "black")
        ax.set_xticks(range(len(templates)), templates, rotation=35, ha="right", fontsize=8)
        labels = [f"{s.replace('_', ' ')} ({int(n[s]) if n.notna()[s] else 0})" for s in subjects] if j == 0 else []
        ax.set_yticks(range(len(subjects)), labels, fontsize=7)
        ax.set_title(m, fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.6, label="difference to control (points)")
    fig.suptitle(title or "subjects x templates: each template's personas against control on the subject's "
                 "questions (questions per subject in brackets)", fontsize=10)
    return fig
