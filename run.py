"""Run the persona benchmark: compose the config, validate it, run, return the headline metric.

    python run.py                                              # the demo on the embedded model
    python run.py -m model=flan,llama2,opt experiment=paper    # the paper's study (GPUs)
    python run.py -m model=flan,llama2,opt experiment=paper dry_run=true   # plans only

The same command run again continues an interrupted job (or skips a complete one): each job's
directory follows from its config (conf/hydra/default.yaml).

Exit codes: 0 done; 2 a config or input error: one message, no traceback, before any weights load
(a value persona_bench refuses; what Hydra cannot compose: an unknown group option or key, a wrong
type, override syntax; and, checked before Hydra creates the run directory by the LaunchCheck
callback, persona_bench/run/launch.py: a run or sweep directory that cannot be made, a model.name,
experiment_name or sweep_name that would become a path, a template listed twice); 1 a failure, or
a sweep in which some job failed (the others still ran); 130/143 interrupted by SIGINT/SIGTERM
(finished work is saved). HYDRA_FULL_ERROR=1 prints Hydra's traceback as well.
"""

import logging
import os
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from persona_bench.config import ConfigError, UserError, register
from persona_bench.models.hub import register_resolvers

# Hydra prints what fails outside the job (composing, making the run directory, its callbacks) and exits 1;
# with HYDRA_FULL_ERROR=1 it raises it instead, and exit_code() below reports it (config errors: exit 2).
FULL_ERROR = os.environ.get("HYDRA_FULL_ERROR") == "1"  # the user asked for tracebacks
os.environ["HYDRA_FULL_ERROR"] = "1"
register()
register_resolvers()  # ${hf:...} in conf/model/hf.yaml: values from the model's own config.json
log = logging.getLogger("persona_bench")
_job_error: list[BaseException] = []  # the exception a single run's job raised (a failure: exit 1)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from persona_bench.backends import keep_loaded
    from persona_bench.run import Interrupted, run
    from persona_bench.run.launch import repeated_options
    from persona_bench.run.store import record_status

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:
        keep_loaded()  # the sweep's next job with the same model, device and options reuses its weights
    try:
        repeated_options(HydraConfig.get().overrides.task)  # this job's lists (a sweep's are checked per job)
        try:
            typed = OmegaConf.to_object(cfg)
        except MissingMandatoryValue as e:
            raise ConfigError(f"{e.full_key} is required and has no value (??? in its config file); "
                              f"set it, e.g. {e.full_key}=...") from None
        except InterpolationResolutionError as e:  # a resolver's UserError (${hf:...}: the model's config.json)
            user = user_error(e)
            if user is None:
                raise
            raise UserError(user) from None
        summary = run(typed)
    except Interrupted as e:
        sys.exit(128 + e.signum)
    except Exception as e:
        if isinstance(e, UserError):
            log.error("%s", e)
        elif multirun:
            log.exception("job failed")
        if not multirun:
            if isinstance(e, UserError):
                sys.exit(2)
            _job_error.append(e)
            raise
        # In a sweep one failing job must not stop the others: record it; the sweep's end lists it.
        try:
            record_status(HydraConfig.get().runtime.output_dir, "failed", reason=f"{type(e).__name__}: {e}")
        except OSError:
            log.error("could not record the failure in %s", HydraConfig.get().runtime.output_dir)
        return None
    return summary.get("accuracy", {}).get("persona_mean")


def user_error(e: BaseException) -> str | None:
    """The message of the UserError behind `e` (one raised inside a resolver arrives wrapped by OmegaConf), without
    the lines OmegaConf adds to it (full_key: ...); None when there is none."""
    cause = e
    while cause is not None and not isinstance(cause, UserError):
        cause = cause.__cause__ or cause.__context__
    return None if cause is None else str(cause).split("\n    full_key:")[0]


def exit_code(e: Exception) -> int:
    """Report an exception Hydra raised (see FULL_ERROR) and return the exit code: 2 with one message for a
    persona_bench UserError (e.g. the ${config_id:} resolver refusing a sweep job's model.name) or what Hydra
    or OmegaConf reject while composing; 1 with the traceback for the job's own failure and anything else."""
    if any(e is failed for failed in _job_error) or not isinstance(e, (UserError, HydraException, OmegaConfBaseException)):
        traceback.print_exception(e)
        return 1
    if FULL_ERROR:
        traceback.print_exception(e)
    user = user_error(e)
    if user is not None:
        print(f"error: {user}", file=sys.stderr)
    else:  # as Hydra prints it: its message, and the OmegaConf error behind it
        more = f"\n{e.__cause__}" if isinstance(e.__cause__, OmegaConfBaseException) else ""
        print(f"error: {e}{more}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        sys.exit(exit_code(e))
