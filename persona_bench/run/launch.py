"""What Hydra is about to launch, checked before Hydra creates the run (or sweep) directory.

`LaunchCheck` (a Hydra callback, conf/hydra/default.yaml) runs once the config is composed and before
Hydra makes any folder; it prints one message and exits 2, so nothing is created, for

    names that become folders    model.name, experiment_name, sweep_name with '/', '\\' or '..'
                                 (model.name=../../x would put the run folder outside outputs/)
    a config group listed twice  template=[speaker,speaker] would compose as one template, in silence
    a folder that cannot be made hydra.run.dir (with -m: hydra.sweep.dir) under a file, in a read-only
                                 folder, or where the system refuses one (/proc/x)
    a SLURM time limit           hydra.launcher.timeout_min (or SBATCH_TIMELIMIT) in no form of sbatch --time,
                                 or unlimited (hydra/launcher=slurm; persona_bench/config/slurm.py); a valid one
                                 is made minutes here, as submitit takes it

A sweep's jobs are checked as far as the command line says: every value of a swept name or template
list. Each job's folder name is checked again when Hydra resolves it (the ${config_id:} resolver), and
run.py checks each job's group lists (repeated_options) before it runs.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from persona_bench.config.errors import ConfigError
from persona_bench.config.slurm import TIME_KEY, slurm_minutes
from persona_bench.config.validate import PATH_NAMES, check_directory, check_path_names


def repeated_options(overrides: Iterable[str]) -> None:
    """A config group given a list that names an option twice (template=[speaker,speaker]): Hydra merges
    the option once and says nothing, so the run would have fewer templates than asked for. Every value of
    a swept list is checked."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if "." in o.key_or_group or "/" in o.key_or_group:  # a value (dataset.subjects=[...]), not a group
            continue
        for value in _values(o):
            if not isinstance(value, list):
                continue
            twice = sorted({str(v) for v in value if value.count(v) > 1})
            if twice:
                once = list(dict.fromkeys(str(v) for v in value))
                raise ConfigError(f"{o.input_line}: {o.key_or_group} lists {', '.join(twice)} more than once, and "
                                  f"a config group's option is composed once; list each once, e.g. "
                                  f"{o.key_or_group}=[{','.join(once)}]")


def _swept_names(config: DictConfig) -> list[dict]:
    """Every value the command line gives a PATH_NAMES key (each value of a sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for o in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        if o.key_or_group in PATH_NAMES:
            out += [{o.key_or_group: v} for v in _values(o) if isinstance(v, (str, int, float))]
    return out


def _values(o) -> list:
    """The value of a parsed override, or each value of a sweep ([] for a sweep with no list of values)."""
    try:
        return list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
    except Exception:  # noqa: BLE001 - an interval sweep (a sweeper plugin's) lists no values
        return []


def _resolved(config: DictConfig, key: str) -> Any:
    """The value of `key` resolved; None where it is unset (???) or needs what only Hydra's job set-up provides
    (${hydra:...})."""
    try:
        return OmegaConf.select(config, key, default=None, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - Hydra resolves it again and reports what fails
        return None


def _names(config: DictConfig) -> dict:
    """PATH_NAMES of the composed config (None where unset)."""
    return {key: _resolved(config, key) for key in PATH_NAMES}


def check_can_make(key: str, path: Any) -> None:
    """The folder `path` (the value of `key`) exists and can be written, or can be made: checked, then made
    and removed again, so that what the system refuses (/proc/x) is found too; nothing is left behind."""
    import os

    alternative = f"e.g. {key}={'multirun' if 'sweep' in key else 'outputs'}/mine (a folder that can be made and written)"
    check_directory(key, str(path), alternative, writable=True)
    p = Path(str(path)).expanduser()
    made: list[Path] = []
    try:
        for part in reversed([p, *p.parents]):
            if not part.exists():
                part.mkdir()
                made.append(part)
        if not os.access(p, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", str(p))
    except OSError as e:
        raise ConfigError(f"{key}={str(path)!r} cannot be made: {e.strerror or e} ({e.filename or p}); "
                          f"{alternative}") from None
    finally:
        for part in reversed(made):
            try:
                part.rmdir()
            except OSError:
                pass


SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def slurm_time_in_minutes(config: DictConfig) -> None:
    """The SLURM launcher's time limit (hydra.launcher.timeout_min, from SBATCH_TIMELIMIT or the command line, in
    any form of sbatch --time) made whole minutes in `config`, as submitit needs it (persona_bench/config/slurm.py);
    raises ConfigError naming the value and the valid forms. Hydra makes the launcher from this config next."""
    if str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "") != SLURM_LAUNCHER:
        return
    try:
        value = OmegaConf.select(config, TIME_KEY)
    except Exception as e:  # noqa: BLE001 - the resolver's own ConfigError arrives wrapped by OmegaConf
        cause = e
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None
    minutes = slurm_minutes(value, TIME_KEY)
    if value != minutes:
        with read_write(config), open_dict(config):
            OmegaConf.update(config, TIME_KEY, minutes)


class LaunchCheck(Callback):
    """The checks of this module's doc, before Hydra creates anything. Hydra turns a callback's exception
    into a warning, so a failed check prints its message and exits 2 itself (as run.py does)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with _exit_on_config_error():
            check_path_names(_names(config))
            repeated_options(config.hydra.overrides.task)
            run_dir = _resolved(config, "hydra.run.dir")
            if run_dir is not None:
                check_can_make("hydra.run.dir", run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with _exit_on_config_error():
            check_path_names(_names(config))
            for names in _swept_names(config):
                check_path_names(names)
            repeated_options(config.hydra.overrides.task)
            slurm_time_in_minutes(config)
            sweep_dir = _resolved(config, "hydra.sweep.dir")
            if sweep_dir is not None:
                check_can_make("hydra.sweep.dir", sweep_dir)


@contextmanager
def _exit_on_config_error():
    try:
        yield
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
