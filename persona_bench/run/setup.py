"""The one setup shared by run.py's runner, the benchmarks and the tests: a job ready to score.

    job, backend, items = setup(cfg)           # prepared, the model loaded, every prompt built
    backend.score([it.request for it in items[:8]], job.method, backend.batch_budget(job.method))
"""

from __future__ import annotations

from typing import Optional

from persona_bench.backends import load_backend
from persona_bench.backends.base import Backend
from persona_bench.config.schema import Config
from persona_bench.run.items import Item, build_items
from persona_bench.run.job import Job


def attach(job: Job, backend: Optional[Backend] = None) -> tuple[Backend, list[Item]]:
    """Load the job's backend (unless one is given), bind the persona placement to its tokenizer and build
    every item of the job's grid."""
    backend = backend or load_backend(job.cfg, job.method)
    job.bind(backend.tokenizer)
    return backend, build_items(job, backend.tokenizer)


def setup(cfg: Config, backend: Optional[Backend] = None) -> tuple[Job, Backend, list[Item]]:
    """Job.prepare (every check that needs no weights), then attach."""
    job = Job.prepare(cfg)
    backend, items = attach(job, backend)
    return job, backend, items
