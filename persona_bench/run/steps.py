"""The optional outputs of a finished job, while its model is still loaded: the model's own persona
pick (self_pick.parquet), each persona sentence's perplexity under the model (perplexity.parquet),
and the job's report; report.enabled=false skips all three. The results are already saved: a failure
here is a warning."""

from __future__ import annotations

import logging

import pandas as pd

from persona_bench.backends.base import Backend
from persona_bench.outputs import PERPLEXITY, REPORT_DIR
from persona_bench.report import Options, write_report
from persona_bench.run.job import Job
from persona_bench.run.self_pick import self_pick, write_self_pick
from persona_bench.run.tracking import Tracker
from persona_bench.scoring.perplexity import write_perplexity

log = logging.getLogger(__name__)


def after_run(job: Job, backend: Backend, tracker: Tracker) -> None:
    """report.enabled=false turns every step off; when on, report.self_pick and report.perplexity each turn
    off their own step (the report then goes without that part)."""
    cfg, out = job.cfg, job.out
    if not cfg.report.enabled:
        log.info("report.enabled=false: no self-pick, perplexity or report after the run; python -m "
                 "persona_bench.report %s writes the report later (without them)", out)
        return
    if cfg.report.self_pick and job.roles:
        try:
            write_self_pick(out, self_pick(job, backend))
        except Exception as e:
            log.warning("the model's own persona pick failed (%s: %s); results are saved", type(e).__name__, e)
    if cfg.report.perplexity:
        try:
            texts = pd.DataFrame([{"template": t.name, "role": r.name, "text": t.render(r)} for t, r in job.grid
                                  if r is not None])
            measured = backend.perplexity(list(texts["text"]))
            if measured is None:
                log.info("persona perplexity is not computed with this backend (%s); python -m "
                         "persona_bench.scoring.perplexity %s computes it with transformers",
                         backend.info.get("backend", "?"), out)
            else:
                table = write_perplexity(out, texts, measured)
                log.info("persona perplexity of %d sentences: %s", len(table), out / PERPLEXITY)
        except Exception as e:
            log.warning("persona perplexity failed (%s: %s); results are saved; python -m "
                        "persona_bench.scoring.perplexity %s computes it later", type(e).__name__, e, out)
    try:
        opts = Options(cfg.report.n_boot, cfg.report.seed, cfg.report.similarity,
                       equivalence_margin=cfg.report.equivalence_margin)
        figs = write_report([out], out / REPORT_DIR, opts,
                            command=f"python -m persona_bench.report {out}")
        tracker.log_report(out / REPORT_DIR, figs)  # the page, report.json, figures and statistics
    except Exception as e:
        log.warning("the report failed (%s: %s); results are saved; python -m persona_bench.report %s retries it",
                    type(e).__name__, e, out)
