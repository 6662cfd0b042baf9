"""The job lifecycle: one job from its config to its saved results, resumable.

    Job.prepare (validate, roles, templates, questions; dry run: plan and stop)
    -> the job's folder (store.py: identity, lock; a complete job stops here)
    -> the backend (the model) -> items (prompts and requests) -> batches under the token budget,
       longest first, minus what earlier attempts saved -> results, saved batch by batch
    -> predictions.parquet, summary.json -> tracking -> after-run steps (self-pick, perplexity, report)

Exit paths: complete; Interrupted by SIGINT/SIGTERM, or SystemExit (submitit stopping a SLURM job to requeue
it) (finished batches saved, status "interrupted");
any other error (status "failed"). The same command continues an unfinished job.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Optional

import torch

from persona_bench.backends import drop_kept
from persona_bench.backends.base import Backend
from persona_bench.config.schema import Config
from persona_bench.models.cost import process_matmul_tflops, utilisation
from persona_bench.models.gpus import claim_device
from persona_bench.outputs import ran_stamp
from persona_bench.run.batching import score_items
from persona_bench.run.items import prompt_hash
from persona_bench.run.job import Job
from persona_bench.run.logged import job_labels, logged_config
from persona_bench.run.plan import make_plan
from persona_bench.run.predictions import job_summary, prediction_rows
from persona_bench.run.redaction import redact
from persona_bench.run.self_check import self_check
from persona_bench.run.setup import attach
from persona_bench.run.steps import after_run
from persona_bench.run.store import JobStore, record_end
from persona_bench.run.tracking import make_tracker
from persona_bench.scoring.requests import Result

log = logging.getLogger(__name__)


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a job. Not an Exception, so no job runner swallows it: the sweep stops."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextmanager
def interruptible():
    """Turn SIGINT and SIGTERM into Interrupted while a job runs (a second signal acts as usual)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.getsignal(s) for s in sigs}

    def handler(signum, frame):
        for s in sigs:
            signal.signal(s, old[s])
        raise Interrupted(signum)

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s in sigs:
            signal.signal(s, old[s])


def run(cfg: Config, backend: Optional[Backend] = None) -> dict:
    """Run one job, or continue it where an earlier attempt stopped; return its summary (the headline
    metric is summary['accuracy']['persona_mean']). A complete job is not rerun. `backend`: an already
    loaded backend (tests: backends.dummy.DummyBackend) instead of the one the config names."""
    job = Job.prepare(cfg)
    if cfg.dry_run:
        plan = make_plan(job)
        print(plan.render())
        return {"dry_run": plan.as_dict()}
    store = JobStore(job.out)
    store.open(cfg)
    try:
        saved = store.complete()
        if saved is not None:
            store.status("complete", n_prompts=saved.get("n_prompts"), skipped=True)
            log.info("job %s is already complete (%s prompts): results in %s; overwrite=true recomputes it",
                     job.config_id, saved.get("n_prompts"), store.out)
            return saved
        with interruptible(), claim_device(cfg.device, holder=str(store.out)) as device:
            # auto with several GPUs: a GPU no other job holds (models/gpus.py); the device is not part of the job id
            claimed, cfg.device = device != cfg.device, device
            try:
                return _run_job(job, store, backend)
            finally:
                if claimed:
                    drop_kept()  # the claim ends with the job: no model of a sweep's earlier job may stay on that GPU
    finally:
        store.close()


def _run_job(job: Job, store: JobStore, backend: Optional[Backend]) -> dict:
    cfg, out = job.cfg, store.out
    tracker = make_tracker(cfg.tracking)
    saved = {"n": 0, "of": job.n_prompts}
    finished = False
    try:
        store.status("running", n_prompts=saved["of"])
        job_type, tags = job_labels(job)
        tracker.start(redact(logged_config(job)), out, run_name=job.run_name, group=cfg.sweep_name, tags=tags,
                      job_type=job_type)  # group: tracking.group, else $WANDB_RUN_GROUP, else the sweep's name
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        backend, items = attach(job, backend)
        store.check_ran(ran_stamp(backend.info))  # what the model ran as, before any part is saved or read back
        log.info("%s", job.describe())
        hashes = [prompt_hash(it.prompt) for it in items]
        done = store.load(hashes)
        saved["n"] = len(done)
        if done:
            log.info("resuming: %d of %d prompts were scored by an earlier attempt; scoring the other %d",
                     len(done), len(items), len(items) - len(done))

        def save(batch: list[int], results: list[Result]) -> None:
            store.save(batch, [hashes[i] for i in batch], results)
            saved["n"] += len(batch)

        results, timing = score_items(backend, items, job, done, save)
        log.info("scored %d prompts in %.1f s (%s prompts/s)", len(items) - len(done), timing["seconds"],
                 timing["prompts_per_s"])
        check = self_check(job, backend, items, results)  # re-scores a sample on the reference path; changes no result
        df = prediction_rows(job, items, results)
        info = backend.info
        tflops = process_matmul_tflops(info["dtype"] if info["dtype"] in ("bf16", "fp32", "fp16") else "fp32", str(info["device"]))
        timing["matmul_tflops"] = round(tflops, 3)
        timing["utilisation"] = round(utilisation(timing["tokens_per_s"] or 0, info["n_non_embedding_params"], tflops), 3)
        summary = redact(job_summary(job, info, df, timing, check))
        store.finish(df, summary)  # local results first; tracking second
        log.info("control accuracy %.4f, persona mean %.4f, by template %s; predicted labels %s; %s prompts/s, "
                 "%s tokens/s (%.0f%% of the %.2f TFLOP/s matmul rate); results in %s",
                 summary["accuracy"]["control"], summary["accuracy"]["persona_mean"], summary["accuracy"]["template"],
                 summary["pred_histogram"], timing["prompts_per_s"], timing["tokens_per_s"],
                 100 * timing["utilisation"], tflops, out)
        tracker.log_results(summary, df, out)
        finished = True
        after_run(job, backend, tracker)
        tracker.finish(ok=True)
        return summary
    except Interrupted as e:
        if finished:  # the results are complete; only the optional outputs were cut short
            log.warning("%s after the results were saved in %s; the report can be written later with "
                        "python -m persona_bench.report %s", e, out, out)
            tracker.finish(ok=True)
            raise
        record_end(out, "interrupted", e, reason=str(e), n_saved=saved["n"], n_prompts=saved["of"])
        log.warning("%s: %d of %d prompts are saved in %s; run the same command again to continue", e, saved["n"],
                    saved["of"], out)
        tracker.finish(ok=False)
        raise
    except SystemExit as e:  # submitit stopping the job to requeue it (SLURM time limit, preemption; docs/scale.md)
        record_end(out, "interrupted", e, reason=f"stopped (exit {e.code}): a SLURM time limit or preemption, where "
                   "submitit requeues the job and it continues", n_saved=saved["n"], n_prompts=saved["of"])
        log.warning("stopped with %d of %d prompts saved in %s; a requeued job (or the same command) continues",
                    saved["n"], saved["of"], out)
        tracker.finish(ok=False)
        raise
    except BaseException as e:
        # never raises: a disk full here must not hide `e` (status.json is written, or removed, not left `running`)
        record_end(out, "failed", e, reason=f"{type(e).__name__}: {e}", n_saved=saved["n"], n_prompts=saved["of"])
        if saved["n"]:
            log.error("job failed with %d of %d prompts saved in %s; fix the cause and run the same command to "
                      "continue", saved["n"], saved["of"], out)
        tracker.finish(ok=False)
        raise
