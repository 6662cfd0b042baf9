"""Run the persona benchmark: compose the config, validate it, run, return the headline metric.

    python run.py                                              # the demo on the embedded model
    python run.py -m model=flan,llama2,opt experiment=paper    # the paper's study (GPUs)
    python run.py -m model=flan,llama2,opt experiment=paper dry_run=true   # plans only

The same command run again continues an interrupted job (or skips a complete one): each job's
directory follows from its config (conf/hydra/default.yaml).

Exit codes: 0 done; 2 a config or input error (one message, nothing loaded); 1 a failure, or a
sweep in which some job failed (the others still ran); 130/143 interrupted by SIGINT/SIGTERM
(finished work is saved).
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from persona_bench.config import ConfigError, UserError, register

register()
log = logging.getLogger("persona_bench")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from persona_bench.run import Interrupted, run
    from persona_bench.run.store import record_status

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        try:
            typed = OmegaConf.to_object(cfg)
        except MissingMandatoryValue as e:
            raise ConfigError(f"{e.full_key} is required and has no value (??? in its config file); "
                              f"set it, e.g. {e.full_key}=...") from None
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
            raise
        # In a sweep one failing job must not stop the others: record it; the sweep's end lists it.
        try:
            record_status(HydraConfig.get().runtime.output_dir, "failed", reason=f"{type(e).__name__}: {e}")
        except OSError:
            log.error("could not record the failure in %s", HydraConfig.get().runtime.output_dir)
        return None
    return summary.get("accuracy", {}).get("persona_mean")


if __name__ == "__main__":
    main()
