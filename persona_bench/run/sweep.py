"""The Hydra callback of a sweep (with run.py, the only code that imports Hydra at run time).

`SweepSummary` runs in the process that launches a multirun: when the sweep ends it lists every
job that ran, and the failed ones with their reasons (read from each job's status.json, which
the job writes even when it fails), writes `<sweep dir>/sweep_status.json`, and exits non-zero
when a job failed, after all the other jobs have run. Before that, unless `report.enabled=false`,
it writes the cross-run report of the sweep's complete jobs into `<sweep dir>/report`
(persona_bench/report): every model side by side, role rankings compared across models; with
tracking=wandb it is logged as one more W&B run of the sweep's group (job type `sweep-report`), so the
models, and the shards of one model merged, sit side by side in one W&B view.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from persona_bench.outputs import REPORT_DIR, REPORT_HTML, REPORT_JSON, SUMMARY, SWEEP_STATUS

log = logging.getLogger("persona_bench")
SWEEP_REPORT = "sweep-report"  # the W&B job type of a sweep's cross-run report


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time() - 1  # status.json mtimes have coarse resolution on some filesystems

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        jobs = {}
        for status in sorted(sweep.glob("*/status.json")):
            if status.stat().st_mtime >= self.started:
                jobs[status.parent.name] = json.loads(status.read_text())
        failed = {name: s for name, s in jobs.items() if s.get("state") != "complete"}
        summary = {"sweep_dir": str(sweep), "jobs": jobs, "failed": sorted(failed)}
        (sweep / SWEEP_STATUS).write_text(json.dumps(summary, indent=2))
        self.report(config, sweep, [sweep / name for name, s in jobs.items() if s.get("state") == "complete"])
        if not failed:
            log.info("sweep finished: %d jobs complete in %s", len(jobs), sweep)
            return
        lines = [f"  {name}: {s.get('state')}: {s.get('reason', '')}" for name, s in failed.items()]
        log.error("sweep finished: %d of %d jobs did not complete (the others' results are saved; rerun the same "
                  "command to retry only the unfinished ones):\n%s", len(failed), len(jobs), "\n".join(lines))
        sys.exit(1)

    def report(self, config: DictConfig, sweep: Path, jobs: list[Path]) -> None:
        """The cross-run report of this sweep's complete jobs; a failure is logged, never raised."""
        rep = config.get("report")
        if rep is None or not rep.get("enabled", True):
            return
        from persona_bench.analysis.equivalence import DEFAULT_MARGIN
        from persona_bench.report.analyse import Options
        from persona_bench.report.write import write_report

        jobs = [j for j in jobs if (j / SUMMARY).is_file()]
        if not jobs:
            return
        try:
            opts = Options(int(rep.n_boot), int(rep.seed), bool(rep.similarity),
                           equivalence_margin=float(rep.get("equivalence_margin", DEFAULT_MARGIN)))
            figs = write_report(jobs, sweep / REPORT_DIR, opts,
                                command=f"python -m persona_bench.report {sweep}")
            log.info("cross-run report of %d jobs: %s", len(jobs), sweep / REPORT_DIR / REPORT_HTML)
        except Exception as e:
            log.error("the sweep's report failed (%s: %s); python -m persona_bench.report %s retries it",
                      type(e).__name__, e, sweep)
            return
        track_sweep_report(config, sweep, figs)


def track_sweep_report(config: DictConfig, sweep: Path, figures: dict) -> None:
    """The cross-run report as one more W&B run of the sweep's group, job type `sweep-report` (tracking.backend
    =wandb): every model's merged accuracies and differences as summary keys, the cross-model tables, the
    figures, report.html as a panel and report.json as an artifact. Its W&B files and run id live in the sweep
    directory, so rerunning the sweep updates the same run. Never raises."""
    from omegaconf import OmegaConf

    from persona_bench.config.schema import TrackingConfig
    from persona_bench.run.logged import resolved_values
    from persona_bench.run.tracking import make_tracker

    try:
        cfg = TrackingConfig(**OmegaConf.to_container(config.tracking, resolve=True))
        if cfg.backend == "none":
            return
        doc = json.loads((sweep / REPORT_DIR / REPORT_JSON).read_text())
        runs = {Path(r["path"]).name: resolved_values(r) for r in doc["meta"]["runs"]}
        name = str(config.get("sweep_name") or sweep.name)
        run_config = {"sweep_name": name, "sweep_dir": str(sweep), "models": doc["models"], "runs": runs,
                      "report": doc["meta"]["options"]}
    except Exception as e:
        log.warning("the sweep's report was not logged to W&B (%s: %s); it is in %s", type(e).__name__, e,
                    sweep / REPORT_DIR)
        return
    tracker = make_tracker(cfg)
    ok = False
    try:
        tracker.start(run_config, sweep, run_name=f"{name}-sweep-report", group=name,
                      tags=[*doc["models"], str(config.get("experiment_name") or ""), "sweep-report", *cfg.tags],
                      job_type=SWEEP_REPORT)
        tracker.log_sweep_report(sweep / REPORT_DIR, figures)
        ok = True
    finally:
        tracker.finish(ok)
