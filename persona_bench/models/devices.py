"""Devices and dtypes: which device a job runs on and which dtype `auto` means there."""

from __future__ import annotations

import gc

import torch

from persona_bench.config.errors import ConfigError

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

DEVICES = "auto, cpu, cuda, cuda:N (N: the GPU's index)"


def resolve_device(device: str) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a device this machine has; ConfigError naming the device otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not valid; valid values: {DEVICES}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r} is not supported; valid values: {DEVICES}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "torch finds no CUDA GPU"
            raise ConfigError(f"device={device}: no CUDA GPU is available on this machine ({why}); "
                              "valid here: auto, cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"device={device}: this machine has {n} CUDA GPU(s); valid: auto, cpu, cuda, "
                              + ", ".join(f"cuda:{i}" for i in range(n)))
    return dev


def attention_kernels(device: torch.device) -> None:
    """On CUDA, take cuDNN out of `scaled_dot_product_attention`'s backends (flash and memory-efficient
    attention remain). torch 2.11 sends masked attention on Hopper to cuDNN first, and cuDNN builds an
    execution plan for every new (batch, length) shape: every scoring batch and every decoding step
    here has a new one (benchmarks/README.md#gpu-check measured the cost on an H200)."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def release_memory() -> None:
    """Collect what nothing references any more (a model's weights), and hand CUDA's cached blocks back to the
    driver where there is a GPU, so the next model (or another process) can have them."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cpu_has_bf16() -> bool:
    """True where the CPU has bf16 matrix units (AMX or AVX512-BF16): bf16 is then faster than fp32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except Exception:  # noqa: BLE001 - private probes may change between torch versions
                pass
    return False


def resolve_dtype(dtype: str, device: torch.device, arch: str = "causal") -> str:
    """'auto' -> bf16 where the hardware computes it natively; else fp16 on old GPUs (fp32 for
    T5-style seq2seq models, whose activations overflow fp16); else fp32."""
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32" if arch == "seq2seq" else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"
