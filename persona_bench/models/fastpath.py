"""Faster forward passes with the same results: fused RMS norms, in-place MLP activations, a contiguous
output-layer input.

transformers computes an RMS norm in five or six tensor passes (pow, mean, add,
rsqrt, two multiplies); on a narrow model such as Gemma 3 270M (hidden 640,
109 norms per forward) those passes took about a fifth of a scoring run on the
CPU. `torch.nn.functional.rms_norm` does the same arithmetic in one fused kernel.

`fuse_norms(model)` gives every norm module of a known family a forward built on
it, keeping each family's exact order of casts:

  gemma  (Gemma, Gemma 2, Gemma 3)  (norm(x.float()) * (1 + w)).type_as(x)
  llama  (Llama, Mistral, Qwen 2/3, T5)  w * norm(x.float()).to(x.dtype)

Each replacement is checked against the module's own forward on random inputs in
the model's dtype before it is kept; a module whose output differs beyond float
rounding keeps its original forward (so a change in transformers cannot change
results silently).

`inplace_mlp(model)` computes Gemma's gated tanh-GELU MLP with the activation and the product in
place on the gate projection's output: the same operations, two fewer (tokens x 2,048) tensors
allocated and written per layer. Checked for equality against the module's own forward.

`contiguous_head(model)` makes the output layer's input contiguous. transformers
slices the last position out of the (rows, positions, hidden) states before the
output layer (`logits_to_keep=1`, the prompt pass of every generation); once the
weights no longer require gradients, torch.matmul cannot fold that strided
(rows, 1, hidden) slice into one matrix product, so it broadcasts the weight to a
(rows, hidden, vocabulary) copy and runs a batched product. For Gemma 3's
262,144-token vocabulary in bf16 that copy was 8.7 GB and 34 s for a batch of 26
prompts (the self-pick step of the demo was killed for memory). A contiguous
(rows, 1, hidden) input is one matrix product over the same values.
"""

from __future__ import annotations

import logging
import types
from contextlib import contextmanager

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

GEMMA = ("GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm")
LLAMA = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "T5LayerNorm", "MixtralRMSNorm",
         "Phi3RMSNorm")
MLP = ("GemmaMLP", "Gemma2MLP", "Gemma3MLP")  # gated MLPs whose act_fn is tanh-GELU: inplace_mlp


def _gemma_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Gemma's (x.float() * rsqrt(mean(x.float()**2) + eps) * (1 + w)).type_as(x), the same operations in
    the same order in fewer passes over the tensor: the fp32 copy of a bf16 input is scaled in place and
    the last product is written straight into the input's dtype (torch.nn.functional.rms_norm is not one
    kernel on the CPU: it ran six passes plus the two casts)."""
    xf = x.float()
    scale = torch.rsqrt(torch.mean(xf * xf, -1, keepdim=True).add_(self.eps))
    xf = xf.mul_(scale) if xf is not x else xf * scale  # an fp32 input is the residual: never in place
    return torch.mul(xf, self._fused_weight, out=torch.empty_like(x))


def _llama_forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.weight * F.rms_norm(x.float(), (x.shape[-1],), None, self.variance_epsilon).to(x.dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    tol = 1e-5 if a.dtype == torch.float32 else 2e-2
    return a.dtype == b.dtype and a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=tol, atol=tol)


@torch.inference_mode()
def fuse_norms(model) -> int:
    """Replace the forward of every known RMS-norm module with a fused one; returns how many."""
    n = 0
    checked: dict = {}
    for module in model.modules():
        name = type(module).__name__
        if name in GEMMA and hasattr(module, "eps"):
            module._fused_weight = (1.0 + module.weight.float()).detach()
            new = _gemma_forward
        elif name in LLAMA and hasattr(module, "variance_epsilon"):
            new = _llama_forward
        else:
            continue
        if getattr(module.weight, "device", torch.device("meta")).type == "meta":
            continue
        original = module.forward
        module.forward = types.MethodType(new, module)
        key = (name, module.weight.dtype, module.weight.shape)
        if key not in checked:
            x = (torch.randn(3, 5, module.weight.shape[-1], device=module.weight.device) * 3).to(module.weight.dtype)
            checked[key] = _same(original(x), module(x))
            if not checked[key]:
                log.warning("fused %s differs from its own forward; keeping the original", name)
        if checked[key]:
            n += 1
        else:
            del module.forward  # back to the class's own forward
    return n


def _gelu_tanh_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """down(gelu_tanh(gate(x)) * up(x)), the activation and the product in place on the gate's output
    (two fewer (tokens x intermediate) tensors per layer; the same operations)."""
    g = self.gate_proj(x)
    torch.ops.aten.gelu_(g, approximate="tanh")
    return self.down_proj(g.mul_(self.up_proj(x)))


def _is_gelu_tanh(act) -> bool:
    fn = getattr(act, "act", None)
    return type(act).__name__ in ("GELUTanh", "PytorchGELUTanh") and getattr(fn, "keywords", {}) == {"approximate": "tanh"}


@torch.inference_mode()
def inplace_mlp(model) -> int:
    """Gated tanh-GELU MLPs (Gemma's) with the activation and the product in place; checked against
    each module's own forward once per shape and dtype, like fuse_norms. Returns how many."""
    n = 0
    checked: dict = {}
    for module in model.modules():
        if not (type(module).__name__ in MLP and _is_gelu_tanh(getattr(module, "act_fn", None))
                and all(isinstance(getattr(module, k, None), torch.nn.Linear) for k in ("gate_proj", "up_proj", "down_proj"))):
            continue
        w = module.gate_proj.weight
        if w.device.type == "meta":
            continue
        original = module.forward
        module.forward = types.MethodType(_gelu_tanh_mlp_forward, module)
        key = (w.dtype, tuple(w.shape))
        if key not in checked:
            x = (torch.randn(3, 5, w.shape[1], device=w.device) * 3).to(w.dtype)
            checked[key] = torch.equal(original(x), module(x))
            if not checked[key]:
                log.warning("in-place %s differs from its own forward; keeping the original", type(module).__name__)
        if checked[key]:
            n += 1
        else:
            del module.forward
    return n


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:]) if args and isinstance(args[0], torch.Tensor) else args


def contiguous_head(model) -> bool:
    """Give the model's output layer a contiguous input (see the module's docstring); True when hooked."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return False
    head.register_forward_pre_hook(_contiguous_input)
    return True


@contextmanager
def unfused(model):
    """The model with every module's own class forward for a while: the fused norms (fuse_norms) are taken
    off and put back after, so a reference computation goes through transformers' code alone."""
    saved = {m: m.__dict__.pop("forward") for m in model.modules() if "forward" in m.__dict__}
    try:
        yield model
    finally:
        for m, fwd in saved.items():
            m.forward = fwd
