"""The Hydra callback of a sweep (with run.py, the only code that imports Hydra at run time).

`SweepSummary` runs in the process that launches a multirun: when the sweep ends it lists every
job that ran, and the failed ones with their reasons (read from each job's status.json, which
the job writes even when it fails), writes `<sweep dir>/sweep_status.json`, and exits non-zero
when a job failed, after all the other jobs have run. Before that, unless `report.enabled=false`,
it writes the cross-run report of the sweep's complete jobs into `<sweep dir>/report`
(persona_bench/report): every model side by side, role rankings compared across models.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from persona_bench.outputs import REPORT_DIR, REPORT_HTML, SUMMARY, SWEEP_STATUS

log = logging.getLogger("persona_bench")


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
            write_report(jobs, sweep / REPORT_DIR, opts,
                         command=f"python -m persona_bench.report {sweep}")
            log.info("cross-run report of %d jobs: %s", len(jobs), sweep / REPORT_DIR / REPORT_HTML)
        except Exception as e:
            log.error("the sweep's report failed (%s: %s); python -m persona_bench.report %s retries it",
                      type(e).__name__, e, sweep)
