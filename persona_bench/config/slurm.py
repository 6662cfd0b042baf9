"""SLURM time limits in every form `sbatch --time` takes, and the SLURM launcher preset's schema.

    slurm_minutes("1-12:00:00")   -> 2160     the `${slurm_minutes:...}` resolver of conf/hydra/launcher/slurm.yaml
    slurm_minutes("24:00:00")     -> 1440
    slurm_minutes("90")           -> 90

sbatch reads "minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours", "days-hours:minutes" and
"days-hours:minutes:seconds"; seconds round up to a whole minute, as SLURM rounds them. submitit (behind
hydra-submitit-launcher) takes the limit as whole minutes (`timeout_min`): it writes `#SBATCH --time=<minutes>`
and compares the minutes a job ran with it to tell a job stopped by its time limit (requeued at most
`max_num_timeout` times) from a preempted one (always requeued).

SLURM's "no limit" (UNLIMITED, INFINITE, -1, and 0, which sbatch reads as no limit) is refused: submitit needs a
finite limit for both uses above; give the partition's own limit instead (`sinfo -o "%P %l"` lists them).

`SlurmSchema` is hydra-submitit-launcher's SLURM schema with `timeout_min` typed Any, so that
`hydra.launcher.timeout_min=1-12:00:00` composes; the -m sweep's LaunchCheck callback (persona_bench/run/launch.py)
turns it into minutes before the launcher is made (Hydra takes launchers only from its hydra_plugins package).
"""

from __future__ import annotations

import os
import re
from typing import Any

from persona_bench.config.errors import ConfigError

TIME_ENV = "SBATCH_TIMELIMIT"
TIME_KEY = "hydra.launcher.timeout_min"
FORMS = ('"minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours", "days-hours:minutes", '
         '"days-hours:minutes:seconds"')
UNLIMITED = ("unlimited", "infinite", "-1", "0")
_DAYS = re.compile(r"(\d+)-(\d+)(?::(\d+))?(?::(\d+))?")   # days-hours[:minutes[:seconds]]
_CLOCK = re.compile(r"(\d+)(?::(\d+))?(?::(\d+))?")         # minutes | minutes:seconds | hours:minutes:seconds


def _seconds(text: str) -> int | None:
    """The time in seconds, or None when `text` is none of sbatch's forms."""
    m = _DAYS.fullmatch(text)
    if m:
        days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    m = _CLOCK.fullmatch(text)
    if not m:
        return None
    parts = [int(g) for g in m.groups() if g is not None]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


def slurm_minutes(value: Any, source: str | None = None) -> int:
    """`value` (a SLURM time limit: any form of `sbatch --time`, or a number of minutes) in whole minutes,
    rounded up. `source` names where it came from in the error (default: SBATCH_TIMELIMIT when that variable
    holds this value, else hydra.launcher.timeout_min). Raises ConfigError for anything else."""
    text = str(value).strip()
    if source is None:
        source = TIME_ENV if os.environ.get(TIME_ENV, "").strip() == text and text else TIME_KEY
    shown = f"{source}={text!r}"
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        seconds = None
    elif isinstance(value, (int, float)):
        seconds = int(value) * 60 if value > 0 else (0 if value in (0, -1) else None)  # 0, -1: SLURM's no limit
    else:
        seconds = None if text.lower() in UNLIMITED else _seconds(text)
    if text.lower() in UNLIMITED or seconds == 0:
        raise ConfigError(f"{shown} asks SLURM for no time limit, which the SLURM launcher cannot use (submitit "
                          f"needs a finite limit to tell a job stopped by its limit from a preempted one); give the "
                          f"partition's limit instead (sinfo -o '%P %l' lists them), e.g. {source}=2-00:00:00")
    if seconds is None:
        raise ConfigError(f"{shown} is not a SLURM time limit; give one of the forms of sbatch --time: {FORMS} "
                          f"(e.g. 1440, 24:00:00 or 1-00:00:00 for a day)")
    return -(-seconds // 60)


def __getattr__(name: str) -> Any:
    """`SlurmSchema`, made on first use (it subclasses the plugin's schema, which imports Hydra; this module does
    not at import). Reachable by name, so a pickled config that holds it (submitit sends Hydra's ConfigStore to
    every SLURM job) loads in the job."""
    if name != "SlurmSchema":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from dataclasses import dataclass

    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    @dataclass
    class SlurmSchema(SlurmQueueConf):
        timeout_min: Any = 60  # minutes, or any form of sbatch --time (made minutes before the launcher is made)

    SlurmSchema.__module__, SlurmSchema.__qualname__ = __name__, "SlurmSchema"
    globals()["SlurmSchema"] = SlurmSchema
    return SlurmSchema


def register_slurm() -> None:
    """The resolver `${slurm_minutes:...}` and, where hydra-submitit-launcher is installed, `slurm_schema` in
    Hydra's ConfigStore (group hydra/launcher), the base of conf/hydra/launcher/slurm.yaml."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("slurm_minutes"):
        OmegaConf.register_new_resolver("slurm_minutes", slurm_minutes)
    try:
        schema = __getattr__("SlurmSchema")
    except ImportError:  # the preset then fails to compose, naming its missing base (pip install hydra-submitit-launcher)
        return
    ConfigStore.instance().store(group="hydra/launcher", name="slurm_schema", node=schema, provider="persona_bench")
