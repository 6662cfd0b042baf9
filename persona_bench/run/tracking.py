"""Experiment tracking: a `Tracker` that does nothing and a `WandbTracker` for Weights & Biases.

The runner writes predictions.parquet and summary.json first and only then calls the tracker,
so a tracking problem can never lose a result. Every W&B call is guarded: an exception becomes
one logged warning and the tracker turns itself off for the rest of the job.

    tracker = make_tracker(cfg.tracking)
    tracker.start(config_dict, out_dir, run_name, group, tags)
    try: ...; tracker.log_results(summary, predictions, out_dir)
    finally: tracker.finish(ok)

W&B files go to `<out_dir>/wandb/`; the run id is kept in `<out_dir>/wandb_run_id.txt`, so a
resumed job continues the same W&B run. An offline run is uploaded later with
`wandb sync <out_dir>/wandb/offline-run-*`. The API key is read by wandb from the environment
(WANDB_API_KEY) or ~/.netrc, never from a config, and `redact` keeps it (and any other
secret-looking environment value) out of what is logged.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import secrets
import string
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from persona_bench.config.schema import TrackingConfig
from persona_bench.outputs import CONTROL, PREDICTIONS, SUMMARY

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
RUN_ID_FILE = "wandb_run_id.txt"
SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "credential", "credentials")
MIN_SECRET_LEN = 8  # environment values shorter than this ("1", "true", "main") are not treated as secrets


# ---------------------------------------------------------------- secrets

def secret_name(name: str) -> bool:
    """True for names like HF_TOKEN, WANDB_API_KEY, apiKey, db_password; False for batch_tokens, tokenizer."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower())
    return any(w.endswith(SECRET_WORDS) for w in words if w)


def secret_values(environ=None) -> list[str]:
    """Values of secret-looking environment variables, longest first."""
    env = os.environ if environ is None else environ
    vals = {v for k, v in env.items() if secret_name(k) and isinstance(v, str) and len(v) >= MIN_SECRET_LEN}
    return sorted(vals, key=len, reverse=True)


def redact(obj, environ=None):
    """A copy of `obj` (nested dicts, lists, tuples) with secrets replaced by "<redacted>": every
    occurrence of a secret-looking environment variable's value inside a string, and the string
    value of any key whose name looks secret (hf_token, api_key, password)."""
    values = secret_values(environ)

    def walk(x, key=None):
        if isinstance(x, dict):
            return {k: walk(v, k) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(walk(v) for v in x)
        if isinstance(x, str):
            if key is not None and x and secret_name(key):
                return REDACTED
            for s in values:
                x = x.replace(s, REDACTED)
        return x

    return walk(obj)


@contextlib.contextmanager
def _redacted_argv():
    """wandb records sys.argv in the run's metadata: hide secret values in it while the run starts."""
    saved = sys.argv
    sys.argv = redact(list(saved))
    try:
        yield
    finally:
        sys.argv = saved


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


# ---------------------------------------------------------------- what is logged

def _name(x) -> str:
    return str(x).replace("/", "_")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summary_metrics(summary: dict) -> dict:
    """Flat W&B summary keys from a runner summary: accuracy/..., delta_vs_control/..., throughput/...,
    and for generated answers generation/... (parsed accuracy, parse failures, the logit answer)."""
    acc = summary.get("accuracy") or {}
    delta = summary.get("delta_vs_control") or {}
    out = {"accuracy/control": acc.get("control"), "accuracy/persona_mean": acc.get("persona_mean"),
           "delta_vs_control/persona_mean": delta.get("persona_mean")}
    for group in ("template", "category", "gender"):
        for name, v in (acc.get(group) or {}).items():
            out[f"accuracy/{group}/{_name(name)}"] = v
        for name, v in (delta.get(group) or {}).items():
            out[f"delta_vs_control/{group}/{_name(name)}"] = v
    for k, v in (summary.get("throughput") or {}).items():
        out[f"throughput/{_name(k)}"] = v
    for k in ("n_prompts", "n_questions", "n_roles", "pred_top_share"):
        out[k] = summary.get(k)
    gen = summary.get("generation") or {}  # scoring=generate: parsed accuracy, failures, logits on the same prompts
    for k, v in (gen.get("parsed_accuracy") or {}).items():
        out[f"generation/parsed_accuracy/{_name(k)}"] = v
    failures = gen.get("parse_failure_rate") or {}
    for k in ("all", "control", "persona"):
        out[f"generation/parse_failure_rate/{k}"] = failures.get(k)
    for name, v in (failures.get("template") or {}).items():
        out[f"generation/parse_failure_rate/template/{_name(name)}"] = v
    logit = gen.get("logit") or {}
    for k, v in (logit.get("accuracy") or {}).items():
        out[f"generation/logit_accuracy/{_name(k)}"] = v
    out["generation/logit_agreement"] = logit.get("agreement")
    return {k: v for k, v in out.items() if _number(v)}


PER_ROLE_COLUMNS = ["role", "template", "category", "gender", "domain", "interpersonal", "n", "accuracy",
                    "delta_vs_control"]


def _py(v):
    """A plain Python value for a W&B table cell (numpy scalars and NaN/NA become float/None)."""
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def per_role_rows(pred: pd.DataFrame) -> list[list]:
    """One row per (role, template): attributes, n, accuracy, and accuracy minus the control's on the same questions."""
    control = pred[pred["template"] == CONTROL].groupby("question_id")["correct"].mean()
    persona = pred[pred["template"] != CONTROL]
    rows = []
    for (role, template), g in persona.groupby(["role", "template"], sort=True):
        first = g.iloc[0]
        same = g[g["question_id"].isin(control.index)]
        delta = (float(same["correct"].mean()) - float(control.loc[same["question_id"]].mean())) if len(same) else None
        rows.append([role, template, first.get("role_category"), first.get("gender"), first.get("domain"),
                     first.get("interpersonal"), int(len(g)), float(g["correct"].mean()), delta])
    return [[_py(v) for v in r] for r in rows]


def artifact_name(run_name: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.' (at most 128 characters)."""
    return ("predictions-" + re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-."))[:128]


# ---------------------------------------------------------------- trackers

class Tracker:
    """The null tracker (tracking.backend=none, and the fallback when W&B is unavailable)."""

    mode = "none"

    def start(self, config: dict, out_dir: Path, run_name: str, group: str, tags: list[str],
              job_type: str | None = None) -> None:
        pass

    def log_results(self, summary: dict, predictions: pd.DataFrame, out_dir: Path) -> None:
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
        kwargs = dict(
            project=self.cfg.project, entity=self.cfg.entity, group=str(group)[:128] if group else None,
            job_type=job_type or self.cfg.job_type, name=run_name,
            tags=list(dict.fromkeys(str(t)[:64] for t in tags if str(t))), config=redact(config),
            dir=str(out_dir), id=run_id, reinit="finish_previous",
        )
        if mode != "disabled":
            kwargs["resume"] = "allow"

        def init(m: str):
            # quiet: wandb otherwise queries the server for the user's name outside init_timeout (~10 s
            # when the host refuses); console off: stdout stays the job's own (multirun jobs share a process).
            settings = wandb.Settings(init_timeout=self.cfg.init_timeout_s, quiet=True, console="off")
            with _redacted_argv():
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

    def log_results(self, summary, predictions, out_dir) -> None:
        if not self.logging:
            return
        try:
            import wandb

            out_dir = Path(out_dir)
            table = wandb.Table(columns=PER_ROLE_COLUMNS, data=per_role_rows(predictions))
            self.run.log({"per_role": table})
            self.run.summary.update(summary_metrics(summary))
            if summary.get("ran"):  # what the model ran as (resolved dtype, revision, ...): the config says `auto`
                self.run.config.update({"ran": summary["ran"]}, allow_val_change=True)
            files = [p for p in (out_dir / PREDICTIONS, out_dir / SUMMARY) if p.exists()]
            if self.cfg.log_artifact and files:
                art = wandb.Artifact(artifact_name(self.run.name or self.run.id), type="predictions",
                                     metadata=redact({"out_dir": str(out_dir)}))
                for p in files:
                    art.add_file(str(p), policy="immutable")  # written once, atomically: no staging copy
                self.run.log_artifact(art)
        except Exception as e:
            self._off("log_results", e)

    def log_figures(self, figures) -> None:
        if not self.logging:  # needs pillow (wandb.Image opens the file)
            return
        try:
            import wandb

            self.run.log({f"figures/{_name(k)}": wandb.Image(str(p)) for k, p in figures.items() if Path(p).exists()})
        except Exception as e:
            self._off("log_figures", e)

    def finish(self, ok: bool) -> None:
        run, self.run = self.run, None
        if run is None:
            return
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
