"""Run the persona benchmark: compose the config, validate it, run, return the headline metric.

    python run.py                                              # the demo on the embedded model
    python run.py -m model=flan,llama2,opt experiment=paper    # the paper's study (GPUs)
    python run.py -m model=flan,llama2,opt experiment=paper dry_run=true   # plans only
"""

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from persona_bench.config import UserError, register

register()
log = logging.getLogger("persona_bench")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from persona_bench.runner import run

    try:
        summary = run(OmegaConf.to_object(cfg))
    except UserError as e:
        log.error("%s", e)
        sys.exit(2)
    return summary.get("accuracy", {}).get("persona_mean")


if __name__ == "__main__":
    main()
