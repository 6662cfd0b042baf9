"""Running a job: the Job built from a config, its items and batches, the store that makes it
resumable, the dry-run plan, tracking, and the steps after the results are saved.

    summary = run(cfg)                          # one job; the same call continues an interrupted one
"""

from __future__ import annotations

from persona_bench.run.job import Job
from persona_bench.run.runner import Interrupted, run

__all__ = ["Interrupted", "Job", "run"]
