"""Writing the report, and its command line: the paper's questions answered for one or many runs, from
saved results only.

    python -m persona_bench.report RUN_DIR [RUN_DIR ...] [--out DIR] [--n-boot 2000] [--seed 0] [--no-similarity]
                                   [--equivalence-margin 0.01]

RUN_DIR is a job directory (outputs/<experiment>/<model>-<id>), a multirun directory
(multirun/<sweep>) or any folder above complete jobs; shards and reruns of one model are read as
one run (persona_bench/analysis/runs.py). Writes, into --out (default: RUN_DIR/report for one
directory, ./report otherwise):

    report.json   every table, test, interval and strategy result (keys in docs/outputs.md)
    report.html   one self-contained page: figures embedded, tables, the regression, run stamps
    figures/*.png the figures

The evaluated model is never loaded here. Prompt perplexity is read from each run's
perplexity.parquet (written at the end of a run, or by `python -m persona_bench.scoring.perplexity`);
prompt-question similarity loads all-MiniLM-L6-v2 from its PyPI package (offline).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from persona_bench.analysis.runs import NoRuns, load_runs
from persona_bench.outputs import FIGURES_DIR, REPORT_DIR, REPORT_HTML, REPORT_JSON
from persona_bench.report import cross_figures, figures
from persona_bench.report.analyse import (
    MEASURES,
    Options,
    analyse_all,
    domain_table,
    jsonable,
    methods,
)
from persona_bench.report.html import render_html

log = logging.getLogger(__name__)


def make_figures(result: dict, fig_dir: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for model, a in result["per_model"].items():
        groups = a["groups"]
        panels = {name.replace("_", " "): groups[name] for name in ("template", "role_category", "gender")
                  if name in groups}
        paths[f"{model}/factors"] = figures.save(
            figures.factor_panels(panels, title=f"{model}: difference to control by template, category and gender"),
            fig_dir / f"{model}_factors.png")
        if "domain" in groups and len(groups["domain"]):
            panels = {"expertise domain": groups.get("domain"), "domain match": domain_table(a["domain_match"])}
            paths[f"{model}/domains"] = figures.save(
                figures.factor_panels(panels, title=f"{model}: expertise domains and in-domain questions"),
                fig_dir / f"{model}_domains.png")
        paths[f"{model}/personas"] = figures.save(figures.persona_deltas(a["persona_effects"], title=model),
                                                  fig_dir / f"{model}_personas.png")
        if len(a["correlations"]):
            paths[f"{model}/mechanisms"] = figures.save(
                figures.mechanism_scatter(a["mechanisms"], MEASURES, a["correlations"], title=f"{model}: mechanisms"),
                fig_dir / f"{model}_mechanisms.png")
        if len(a["strategies"]):
            paths[f"{model}/strategies"] = figures.save(
                figures.strategies(a["strategies"], title=f"{model}: persona selection on the "
                                   f"{a['strategies']['n_test'].max()} test questions (red: significant after Holm's correction)"),
                fig_dir / f"{model}_strategies.png")
    per = result["per_model"]
    cross_figs = {
        "persona_distributions": lambda: cross_figures.distributions({m: a["persona_effects"] for m, a in per.items()}),
        "factors_by_model": lambda: cross_figures.factors_by_model({m: a["groups"] for m, a in per.items()}),
        "audience_vs_speaker": lambda: cross_figures.audience_vs_speaker(
            {m: a["template_pairs"] for m, a in per.items() if len(a.get("template_pairs", ()))}),
        "gender_pairs": lambda: cross_figures.gender_pairs(
            {m: a["gender_pairs"] for m, a in per.items() if len(a.get("gender_pairs", ()))}),
        "subject_template": lambda: cross_figures.subject_heatmap(
            {m: a["subject_template"] for m, a in per.items() if len(a.get("subject_template", ()))}),
    }
    needs = {"audience_vs_speaker": "template_pairs", "gender_pairs": "gender_pairs",
             "subject_template": "subject_template"}
    for key, draw in cross_figs.items():
        if key in needs and not any(len(a.get(needs[key], ())) for a in per.values()):
            continue
        paths[key] = figures.save(draw(), fig_dir / f"{key}.png")
    cross = result["cross_model"]
    heat = cross["role_model_delta"]
    if len(heat):
        paths["role_model_heatmap"] = figures.save(figures.role_model_heatmap(heat), fig_dir / "role_model_heatmap.png")
    if "logit_vs_generation" in cross:
        paths["logit_vs_generation"] = figures.save(
            figures.logit_vs_generation(cross["logit_vs_generation_personas"], cross["logit_vs_generation"]),
            fig_dir / "logit_vs_generation.png")
    return paths


def write_report(paths: list, out: Path, opts: Options = Options(), command: str = "") -> dict[str, Path]:
    """Analyse the runs below `paths` and write report.json, report.html and figures/ into `out`.
    Returns the figure paths by name (for W&B)."""
    results = load_runs(paths)
    started = time.perf_counter()
    result = analyse_all(results, opts)
    out = Path(out)
    figs = make_figures(result, out / FIGURES_DIR)
    meta = {"created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command or "persona_bench.report.write_report",
            "options": vars(opts), "runs": [r.stamp() for runs in results.runs.values() for r in runs],
            "warnings": list(results.warnings)}
    doc = {"meta": meta, "models": results.models, **result,
           "figures": {k: str(p.relative_to(out)) for k, p in figs.items()}, "methods": methods(result)}
    from persona_bench.outputs import write_atomic

    write_atomic(out / REPORT_JSON, lambda p: p.write_text(json.dumps(jsonable(doc), indent=1)))
    write_atomic(out / REPORT_HTML, lambda p: p.write_text(render_html(result, results, figs, meta), encoding="utf-8"))
    log.info("report of %d model(s) written in %.1f s: %s", len(results.models), time.perf_counter() - started,
             out / REPORT_HTML)
    return figs


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m persona_bench.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="job directories, multirun directories or folders above them")
    ap.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report for one directory, else ./report)")
    ap.add_argument("--n-boot", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-similarity", action="store_true", help="skip MiniLM prompt-question similarity")
    ap.add_argument("--equivalence-margin", type=float, default=0.01,
                    help="TOST margin in accuracy (default 0.01 = 1 point; report.equivalence_margin)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.n_boot <= 0:
        ap.error(f"--n-boot={args.n_boot} must be a positive number of resamples")
    if not 0 < args.equivalence_margin < 1:
        ap.error(f"--equivalence-margin={args.equivalence_margin} must be between 0 and 1 (0.01 = 1 point)")
    out = args.out or (Path(args.runs[0]) / REPORT_DIR if len(args.runs) == 1 else Path(REPORT_DIR))
    try:
        opts = Options(args.n_boot, args.seed, not args.no_similarity, equivalence_margin=args.equivalence_margin)
        write_report(args.runs, out, opts,
                     command="python -m persona_bench.report " + " ".join(argv if argv is not None else sys.argv[1:]))
    except (NoRuns, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out / REPORT_HTML)
    return 0
