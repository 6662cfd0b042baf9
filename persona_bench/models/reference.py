"""The model a run's numerical self-check scores with: fp32 weights where memory allows.

    with reference_model(model, info, cfg, cache_dir) as (ref, dtype, note):
        ...                                 # ref: the run's model (fp32, or bitsandbytes) or an fp32 copy

  - an fp32 run: the run's own model, its fused norms taken off (fastpath.unfused);
  - a bitsandbytes-quantized run: the run's own model at batch 1 (its quantized compute path: there are
    no full-precision weights to compare with);
  - a bf16/fp16 run: a second copy of the weights loaded in fp32 from the same files, plain
    transformers (no fast paths), when it fits: on the CPU in the available memory, on CUDA in the
    GPU's free memory (parameters x 4 bytes, with room for the activations of one prompt); else the
    run's own model in the run's dtype at batch 1, and `note` says so.
"""

from __future__ import annotations

import gc
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch

from persona_bench.config.schema import ModelConfig
from persona_bench.models.devices import release_memory
from persona_bench.models.fastpath import unfused

log = logging.getLogger(__name__)

HEADROOM = 1.5  # an fp32 copy is loaded when free memory >= HEADROOM x its bytes + SPARE
SPARE = 512 * 2**20


def free_bytes(device: torch.device) -> Optional[int]:
    """Free memory where the model lives: the CUDA GPU's free memory, or the machine's available memory
    (MemAvailable); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def load_fp32_copy(cfg: ModelConfig, device: torch.device, cache_dir: Optional[Path]):
    """The model's weights again, in fp32, plain transformers (no fused norms, no hooks), on `device`."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from persona_bench.models.loading import model_dir

    where, kwargs, _ = model_dir(cfg, cache_dir)
    if device.type == "cuda":
        kwargs["device_map"] = {"": device.index or 0}
    auto = AutoModelForSeq2SeqLM if cfg.arch == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(where, dtype=torch.float32, **kwargs)
    model.eval()
    model.requires_grad_(False)
    return model


@contextmanager
def _strict_fp32():
    """fp32 matrix products in fp32, not TF32, for the while (torch's default; a caller may have changed it)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _choose(model, info: dict, cfg: Optional[ModelConfig], cache_dir: Optional[Path]) -> tuple:
    """(model, dtype, note, whether the model is a copy to free after) for reference_model."""
    dtype = info.get("dtype", "fp32")
    quant = info.get("quantization", "none")
    if info.get("quantized_layers") or quant not in ("none", None):
        return model, f"{quant} (bitsandbytes)", "the run's quantized model (no full-precision weights to compare with)", False
    if dtype == "fp32":
        return model, "fp32", "the run's fp32 model, fast paths off", False
    need = 4 * sum(p.numel() for p in model.parameters())
    free = free_bytes(model.device)
    if cfg is None:
        why = "the model's files are not known to this backend"
    elif free is None or free < HEADROOM * need + SPARE:
        why = (f"an fp32 copy needs {need / 1e9:.2f} GB; {'unknown' if free is None else f'{free / 1e9:.2f} GB'} "
               f"free on {model.device}")
    else:
        try:
            return load_fp32_copy(cfg, model.device, cache_dir), "fp32", "an fp32 copy of the weights, plain transformers", True
        except Exception as e:  # noqa: BLE001 - out of memory, or files gone: check in the run's dtype
            why = f"loading an fp32 copy failed ({type(e).__name__}: {str(e)[:200]})"
            gc.collect()
    log.info("self-check in the run's %s, not fp32: %s", dtype, why)
    return model, dtype, f"the run's {dtype} model, fast paths off ({why})", False


@contextmanager
def reference_model(model, info: dict, cfg: Optional[ModelConfig] = None, cache_dir: Optional[Path] = None):
    """Yield (model, dtype, note) for the self-check (see the module's docstring): the run's model with its fast
    paths off, or an fp32 copy, freed after."""
    ref, dtype, note, copy = _choose(model, info, cfg, cache_dir)
    try:
        with unfused(ref), _strict_fp32():
            yield ref, dtype, note
    finally:
        if copy:
            del ref
            release_memory()
