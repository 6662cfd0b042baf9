"""What bitsandbytes quantization did to a loaded model, counted rather than assumed.

    stats = quantization_stats(model)     # {quantization, quantized_layers, linear_layers, weight_bytes}
    check_quantized(cfg, stats)           # ConfigError when 4bit/8bit was asked and no layer was quantized

A BitsAndBytesConfig is a request: transformers may skip it (a model class without support, a
config replaced on the way, a bitsandbytes without a backend for the device) and still load the
model unquantized. The load counts the layers that became bitsandbytes Linear4bit / Linear8bitLt
(by isinstance when bitsandbytes is imported, else by class name) and the bytes the weights take as
stored (every parameter once, plus the quantization state: 4-bit blocks' absmax and code books,
8-bit row scales), and summary.json records both beside the quantization asked for.
"""

from __future__ import annotations

import sys

import torch

from persona_bench.config.errors import ConfigError
from persona_bench.config.schema import ModelConfig

KINDS = {"Linear4bit": "4bit", "Linear8bitLt": "8bit"}  # bitsandbytes module class -> quantization


def _bnb_classes() -> dict:
    """bitsandbytes' quantized linear classes -> quantization, when bitsandbytes is imported (transformers imports
    it to quantize; an unquantized load need not pay for it, nor its warnings); else {}: names decide."""
    bnb = sys.modules.get("bitsandbytes")
    nn = getattr(bnb, "nn", None)
    return {getattr(nn, name): kind for name, kind in KINDS.items() if hasattr(nn, name)} if nn is not None else {}


def layer_quantization(module, classes: dict) -> str | None:
    """'4bit' or '8bit' for a bitsandbytes quantized linear layer (or a subclass), else None."""
    for cls, kind in classes.items():
        if isinstance(module, cls):
            return kind
    names = {c.__name__ for c in type(module).__mro__}
    return next((kind for name, kind in KINDS.items() if name in names), None)


def _state_tensors(obj, seen: set, depth: int = 0) -> list[torch.Tensor]:
    """The tensors of a bitsandbytes quantization state (QuantState, nested for double quantization)."""
    if depth > 3 or obj is None or id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    out: list[torch.Tensor] = []
    for value in vars(obj).values() if hasattr(obj, "__dict__") else ():
        if isinstance(value, torch.Tensor) or type(value).__name__ == "QuantState":
            out += _state_tensors(value, seen, depth + 1)
    return out


def logical_numel(p: torch.Tensor) -> int:
    """Parameters a tensor stands for: a bitsandbytes 4-bit weight packs two in a byte (its quant_state keeps the
    original shape), so its own numel() is half the layer's parameters."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else p.numel()


def weight_bytes(model) -> int:
    """Bytes of the weights as stored: every parameter once (tied weights once), plus the tensors of its
    quantization state (Params4bit.quant_state; Int8Params.SCB), each storage counted once."""
    storages: dict[tuple, int] = {}

    def add(t: torch.Tensor) -> None:
        if t.device.type == "meta":
            return
        key = (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)
        storages[key] = t.numel() * t.element_size()

    for p in model.parameters():
        add(p)
        seen: set = set()
        for attr in ("quant_state", "SCB"):
            for t in _state_tensors(getattr(p, attr, None), seen):
                add(t)
    return sum(storages.values())


def quantization_stats(model) -> dict:
    """What a loaded model holds: its linear layers, how many bitsandbytes quantized (and to what), and
    its weight bytes as stored. quantization: 4bit | 8bit | mixed (both kinds) | none."""
    classes = _bnb_classes()
    n_linear, kinds = 0, []
    for module in model.modules():
        kind = layer_quantization(module, classes)
        if kind is not None or isinstance(module, torch.nn.Linear):
            n_linear += 1
        if kind is not None:
            kinds.append(kind)
    found = sorted(set(kinds))
    return {"quantization": found[0] if len(found) == 1 else ("mixed" if found else "none"),
            "quantized_layers": len(kinds), "linear_layers": n_linear, "weight_bytes": weight_bytes(model)}


def check_quantized(cfg: ModelConfig, stats: dict) -> None:
    """Fail when model.quantization asked for 4bit/8bit and no layer of the loaded model is quantized: the
    job would otherwise run, and be recorded, in full precision."""
    if cfg.quantization == "none" or stats["quantized_layers"] > 0:
        return
    try:
        import bitsandbytes
        import transformers

        versions = f"bitsandbytes {bitsandbytes.__version__}, transformers {transformers.__version__}"
    except Exception:  # noqa: BLE001
        versions = "bitsandbytes does not import"
    raise ConfigError(
        f"model.quantization={cfg.quantization} was asked for {cfg.name} ({cfg.path}), but the loaded model has no "
        f"bitsandbytes layer: 0 of its {stats['linear_layers']} linear layers are quantized (weights "
        f"{stats['weight_bytes'] / 1e9:.2f} GB as stored), so it would run unquantized. Check that this "
        f"bitsandbytes and transformers ({versions}) quantize this model class on this device, or run it with "
        "model.quantization=none"
    )
