"""Experiment tracking: a `Tracker` that does nothing and a `WandbTracker` for Weights & Biases.

The runner writes predictions.parquet and summary.json first and only then calls the tracker,
so a tracking problem can never lose a result. Every W&B call is guarded: an exception becomes
one logged warning and the tracker turns itself off for the rest of the job.

    tracker = make_tracker(cfg.tracking)
    tracker.start(config_dict, out_dir, run_name, group, tags, job_type)
    try: ...; tracker.log_results(summary, predictions, out_dir); tracker.log_report(report_dir, figures)
    finally: tracker.finish(ok)

A sweep's callback (sweep.py) logs its cross-run report as one more run of the sweep's group with
`log_sweep_report`. What is logged (keys, tables, config) is computed in logged.py; where a run goes
(project, entity, group: the config's value, else WANDB_PROJECT/WANDB_ENTITY/WANDB_RUN_GROUP, else the
default) in `run_target`, and its mode in `resolve_mode`.

W&B files go to `<out_dir>/wandb/`; the run id is kept in `<out_dir>/wandb_run_id.txt`, so a
resumed job continues the same W&B run. An offline run is uploaded later with
`wandb sync <out_dir>/wandb/offline-run-*`. The API key is read by wandb from the environment
(WANDB_API_KEY) or ~/.netrc, never from a config, and redaction.py keeps it (and any other
secret-looking environment value) out of what is logged.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import secrets
import string
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from persona_bench.config.schema import TrackingConfig
from persona_bench.outputs import PREDICTIONS, REPORT_HTML, REPORT_JSON, SUMMARY
from persona_bench.run.logged import (
    PER_ROLE_COLUMNS,
    artifact_name,
    key_part,
    per_role_rows,
    report_metrics,
    report_tables,
    resolved_values,
    summary_metrics,
    sweep_metrics,
    with_stats,
)
from persona_bench.run.redaction import redact, redacted_argv

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id.txt"


# ---------------------------------------------------------------- mode

def base_url() -> str:
    """The W&B server wandb will use: $WANDB_BASE_URL, else the installed wandb's default."""
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url.rstrip("/")
    try:
        import wandb

        return wandb.Settings().base_url.rstrip("/")
    except Exception:
        return "https://api.wandb.ai"


def api_key_source(url: str) -> str | None:
    """Where a W&B credential is found (cheap: environment, then netrc; no network), or None."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(var):
            return var
    try:
        from wandb.sdk.lib.wbauth import (
            read_netrc_auth,  # wandb's own lookup: $NETRC, ~/.netrc, host aliases
        )

        return "netrc" if read_netrc_auth(host=url) else None
    except Exception:
        return None


def probe(url: str, timeout_s: float) -> str | None:
    """None if `url` answers an HTTP request (any status) within timeout_s, else why not. The
    request runs in a daemon thread, so a slow DNS lookup cannot hold the caller past timeout_s."""
    result: list = []

    def ask():
        try:
            urllib.request.urlopen(url, timeout=timeout_s).close()
            result.append(None)
        except urllib.error.HTTPError:
            result.append(None)  # an HTTP error status is still an answer
        except Exception as e:
            result.append(f"{type(e).__name__}: {getattr(e, 'reason', e)}")

    t = threading.Thread(target=ask, name="wandb-probe", daemon=True)
    t.start()
    t.join(timeout_s)
    return result[0] if result else f"no answer within {timeout_s:g} s"


def resolve_mode(cfg: TrackingConfig) -> tuple[str, str]:
    """(mode, reason): the W&B mode this job uses and why.

    Precedence: tracking.mode when it is online, offline or disabled; else $WANDB_MODE when set
    (online, offline, disabled; wandb's aliases dryrun and run are accepted); else auto: online if a
    credential is found ($WANDB_API_KEY, $WANDB_IDENTITY_TOKEN_FILE or a netrc entry for the
    host) and the host ($WANDB_BASE_URL or wandb's default) answers within tracking.probe_timeout_s,
    otherwise offline.
    """
    if cfg.mode != "auto":
        return cfg.mode, f"tracking.mode={cfg.mode}"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        mode = {"dryrun": "offline", "run": "online"}.get(env, env)
        if mode in ("online", "offline", "disabled"):
            return mode, f"WANDB_MODE={env} in the environment"
        log.warning("ignoring WANDB_MODE=%s (not online, offline or disabled)", env)
    url = base_url()
    source = api_key_source(url)
    if source is None:
        return "offline", f"no W&B API key (set WANDB_API_KEY or run `wandb login`) for {url}"
    why = probe(url, cfg.probe_timeout_s)
    if why is not None:
        return "offline", f"{url} did not answer ({why})"
    return "online", f"key from {source}; {url} answered"


# ---------------------------------------------------------------- where a run goes

DEFAULT_PROJECT = "persona-bench"


def run_target(cfg: TrackingConfig, group: str | None = None, environ=None) -> dict:
    """project, entity and group of a W&B run. Each is the config's value when it sets one (tracking.project,
    tracking.entity, tracking.group), else the environment's (WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP),
    else the default: project persona-bench, the API key's default entity, group `group` (the sweep's name)."""
    env = os.environ if environ is None else environ
    return {"project": cfg.project or env.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            "entity": cfg.entity or env.get("WANDB_ENTITY") or None,
            "group": cfg.group or env.get("WANDB_RUN_GROUP") or group or None}


# ---------------------------------------------------------------- trackers

class Tracker:
    """The null tracker (tracking.backend=none, and the fallback when W&B is unavailable)."""

    mode = "none"

    def start(self, config: dict, out_dir: Path, run_name: str, group: str | None, tags: list[str],
              job_type: str | None = None) -> None:
        pass

    def log_results(self, summary: dict, predictions: pd.DataFrame, out_dir: Path) -> None:
        pass

    def log_report(self, report_dir: Path, figures: dict[str, Path]) -> None:
        pass

    def log_sweep_report(self, report_dir: Path, figures: dict[str, Path]) -> None:
        pass

    def log_figures(self, figures: dict[str, Path]) -> None:
        pass

    def finish(self, ok: bool) -> None:
        pass


class WandbTracker(Tracker):
    """Weights & Biases. Never raises: a failing call logs one warning and turns tracking off."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg = cfg
        self.run = None
        self.mode = "off"
        self.per_role: list[list] | None = None  # the per-role rows, logged once: with the report's statistics or at finish

    def _off(self, what: str, e: BaseException) -> None:
        """One warning; later log calls do nothing; finish() still closes a started run."""
        log.warning("W&B %s failed (%s: %s); tracking is off for this job, local results are unaffected",
                    what, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        self.mode = "off"

    @property
    def logging(self) -> bool:
        return self.run is not None and self.mode in ("online", "offline")

    def start(self, config, out_dir, run_name, group, tags, job_type=None) -> None:
        try:
            self._start(config, Path(out_dir), run_name, group, tags, job_type)
        except Exception as e:
            self._off("start", e)

    def _start(self, config, out_dir, run_name, group, tags, job_type) -> None:
        import wandb

        out_dir.mkdir(parents=True, exist_ok=True)
        id_file = out_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if not run_id:
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            id_file.write_text(run_id + "\n")
        mode, reason = resolve_mode(self.cfg)
        target = run_target(self.cfg, group)
        kwargs = dict(
            project=target["project"], entity=target["entity"],
            group=str(target["group"])[:128] if target["group"] else None,
            job_type=job_type or self.cfg.job_type, name=run_name,
            tags=list(dict.fromkeys(str(t)[:64] for t in tags if str(t))), config=redact(config),
            dir=str(out_dir), id=run_id, reinit="finish_previous",
        )
        if mode != "disabled":
            kwargs["resume"] = "allow"

        def init(m: str):
            # quiet: wandb otherwise queries the server for the user's name outside init_timeout (~10 s when the
            # host refuses); console off: stdout stays the job's own (multirun jobs share a process).
            settings = wandb.Settings(init_timeout=self.cfg.init_timeout_s, quiet=True, console="off")
            with redacted_argv():
                return wandb.init(mode=m, settings=settings, **kwargs)

        if mode == "online":
            try:
                self.run = init("online")
            except Exception as e:
                log.warning("W&B online start failed (%s: %s); continuing offline", type(e).__name__,
                            str(e).splitlines()[0] if str(e) else "")
                mode, reason = "offline", f"online start failed ({type(e).__name__})"
                wandb.teardown()  # the failed run keeps its id busy in wandb's service process
        if self.run is None:
            self.run = init(mode)
        self.mode = mode
        if mode == "offline":
            # A warning when the user meant to go online (a key is set, or mode=online), else plain information.
            meant_online = self.cfg.mode == "online" or (
                self.cfg.mode == "auto" and not os.environ.get("WANDB_MODE") and api_key_source(base_url()) is not None)
            log.log(logging.WARNING if meant_online else logging.INFO, "W&B offline: %s; upload later with: wandb sync %s",
                    reason, out_dir / "wandb" / "offline-run-*")
        else:
            log.info("W&B %s: %s", mode, reason)

    def _artifact(self, kind: str, files: list[Path], metadata: dict) -> None:
        import wandb

        files = [p for p in files if p.exists()]
        if not (self.cfg.log_artifact and files):
            return
        art = wandb.Artifact(artifact_name(self.run.name or self.run.id, kind), type=kind, metadata=redact(metadata))
        for p in files:
            art.add_file(str(p), policy="immutable")  # written once, atomically: no staging copy
        self.run.log_artifact(art)

    def log_results(self, summary, predictions, out_dir) -> None:
        """Summary keys, the resolved values into the config, predictions and summary as an artifact; the
        per-role table waits for the report's statistics (log_report) or the end of the job (finish)."""
        if not self.logging:
            return
        try:
            out_dir = Path(out_dir)
            self.per_role = per_role_rows(predictions)
            self.run.summary.update(summary_metrics(summary))
            # what the job ran as (resolved dtype, scoring, placement, revision, ...) where the config says `auto`
            resolved = {**dict(self.run.config.get("resolved") or {}), **resolved_values(summary)}
            self.run.config.update(redact({"resolved": resolved}), allow_val_change=True)
            self._artifact("predictions", [out_dir / PREDICTIONS, out_dir / SUMMARY], {"out_dir": str(out_dir)})
        except Exception as e:
            self._off("log_results", e)

    def _log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        import wandb

        self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def _log_report_files(self, report_dir: Path, figures: dict) -> dict:
        """report.html as an HTML panel (`report`), the figures as images, report.json and report.html as an
        artifact of type `report`; returns report.json's content."""
        import wandb

        html = report_dir / REPORT_HTML
        if html.exists():
            self.run.log({"report": wandb.Html(html.read_text(encoding="utf-8"), inject=False)})
        self.log_figures(figures)
        self._artifact("report", [report_dir / REPORT_JSON, html], {"report_dir": str(report_dir)})
        return json.loads((report_dir / REPORT_JSON).read_text())

    def log_report(self, report_dir, figures) -> None:
        """A job's report: the files (_log_report_files), its statistics as summary keys (logged.report_metrics)
        and the per-role table with the statistics as extra columns (logged.with_stats)."""
        if not self.logging:
            return
        try:
            doc = self._log_report_files(Path(report_dir), figures)
            analysis = next(iter((doc.get("per_model") or {}).values()), {})
            self.run.summary.update(report_metrics(analysis))
            if self.per_role is not None:
                rows, self.per_role = self.per_role, None
                self._log_table("per_role", *with_stats(rows, analysis.get("persona_effects") or []))
        except Exception as e:
            self._off("log_report", e)

    def log_sweep_report(self, report_dir, figures) -> None:
        """A sweep's cross-run report: the files (_log_report_files), each model's merged accuracies and
        differences as <model>/... summary keys (logged.sweep_metrics), and the cross-model tables
        (logged.report_tables)."""
        if not self.logging:
            return
        try:
            doc = self._log_report_files(Path(report_dir), figures)
            self.run.summary.update(sweep_metrics(doc))
            for key, (columns, rows) in report_tables(doc).items():
                self._log_table(key, columns, rows)
        except Exception as e:
            self._off("log_sweep_report", e)

    def log_figures(self, figures) -> None:
        if not self.logging:  # needs pillow (wandb.Image opens the file)
            return
        try:
            import wandb

            self.run.log({f"figures/{key_part(k)}": wandb.Image(str(p)) for k, p in figures.items() if Path(p).exists()})
        except Exception as e:
            self._off("log_figures", e)

    def finish(self, ok: bool) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        try:
            if self.per_role is not None and self.mode in ("online", "offline"):  # no report: the table without statistics
                import wandb

                run.log({"per_role": wandb.Table(columns=PER_ROLE_COLUMNS, data=self.per_role)})
        except Exception as e:
            log.warning("W&B per_role table failed (%s: %s)", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        self.per_role = None
        try:
            run.finish(exit_code=0 if ok else 1)
        except Exception as e:
            log.warning("W&B finish failed (%s: %s)", type(e).__name__, str(e).splitlines()[0] if str(e) else "")


def make_tracker(cfg: TrackingConfig) -> Tracker:
    """The tracker tracking.backend asks for; the null tracker when wandb is not installed."""
    if cfg.backend == "none":
        return Tracker()
    if cfg.backend != "wandb":
        log.warning("tracking.backend=%s is not wandb or none; tracking is off", cfg.backend)
        return Tracker()
    try:
        importlib.import_module("wandb")
    except Exception as e:
        log.warning("tracking.backend=wandb but wandb cannot be imported (%s); tracking is off "
                    "(pip install wandb, or tracking=none)", e)
        return Tracker()
    return WandbTracker(cfg)
