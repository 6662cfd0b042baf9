"""Fused RMS norms give the same forward pass; the throughput benchmark's FLOP and shape accounting."""

from __future__ import annotations

import pytest
import torch

from persona_bench.models.cost import (
    Shapes,
    attention_flops,
    layer_shapes,
    scoring_flops,
    shape_ceiling,
)
from persona_bench.models.fastpath import fuse_norms, inplace_mlp


def _logits(model, ids):
    with torch.inference_mode():
        if model.config.is_encoder_decoder:
            start = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id)
            return model(input_ids=ids, decoder_input_ids=start).logits
        return model(input_ids=ids).logits


def _tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=8,
                           max_position_embeddings=256)
    model = Gemma3ForCausalLM(cfg).eval()
    for name, p in model.named_parameters():  # norms start at zero weight: give them real values
        if "norm" in name:
            p.data.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("arch", ["llama", "t5", "gemma3"])
def test_fused_norms_leave_logits_unchanged(tiny_model_dir, arch):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if arch == "gemma3":
        model = _tiny_gemma3()
    else:
        auto = AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM
        model = auto.from_pretrained(tiny_model_dir(arch)).eval()
    ids = torch.randint(3, 250, (3, 17), generator=torch.Generator().manual_seed(1))
    before = _logits(model, ids)
    norms = [m for m in model.modules() if "Norm" in type(m).__name__]
    n = fuse_norms(model)
    assert n == len(norms) > 0
    assert all("forward" in vars(m) for m in norms)  # each module has its fused forward
    torch.testing.assert_close(_logits(model, ids), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gemma3_fast_forward_is_bit_identical(dtype):
    """Gemma's fused norms and in-place MLP activation do transformers' own operations in the same order:
    the logits are bit for bit the same in bf16 (the CPU's fast dtype) and fp32."""
    model = _tiny_gemma3().to(dtype)
    ids = torch.randint(3, 250, (3, 17), generator=torch.Generator().manual_seed(2))
    before = _logits(model, ids)
    mlps = [m for m in model.modules() if type(m).__name__ == "Gemma3MLP"]
    assert fuse_norms(model) > 0 and inplace_mlp(model) == len(mlps) > 0
    assert all("forward" in vars(m) for m in mlps)
    assert torch.equal(_logits(model, ids), before)


def test_an_mlp_with_another_activation_keeps_its_own_forward():
    model = _tiny_gemma3()
    for m in model.modules():
        if type(m).__name__ == "Gemma3MLP":
            m.act_fn = torch.nn.SiLU()
    assert inplace_mlp(model) == 0 and not any("forward" in vars(m) for m in model.modules() if type(m).__name__ == "Gemma3MLP")


def test_a_norm_that_does_not_match_keeps_its_own_forward():
    class LlamaRMSNorm(torch.nn.Module):  # the known name, but not the arithmetic fuse_norms assumes
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(8))
            self.variance_epsilon = 1e-6

        def forward(self, x):
            return x * self.weight + 1

    model = torch.nn.Sequential(LlamaRMSNorm())
    x = torch.randn(2, 8)
    assert fuse_norms(model) == 0
    assert "forward" not in vars(model[0])
    torch.testing.assert_close(model(x), x + 1)


def test_layer_shapes_count_every_body_linear_once(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"))
    s = layer_shapes(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head]
    assert s.body_params == sum(m.weight.numel() for m in linears)
    assert sum(s.linears.values()) == len(linears)
    assert s.head_params == model.lm_head.weight.numel()
    assert len(s.windows) == model.config.num_hidden_layers and s.windows[0] is None


def test_attention_flops_count_the_causal_triangle_and_the_window():
    s = Shapes(linears={}, body_params=0, head_params=0, hidden=8, vocab=0, n_heads=2, head_dim=4, windows=[None, 3])
    per_pair = 4 * 2 * 4
    # prompt of 5 tokens: full layer 1+2+3+4+5 = 15 pairs, window-3 layer 1+2+3+3+3 = 12
    assert attention_flops(s, [0] * 5) == per_pair * (15 + 12)
    # one option of 3 tokens feeds 2 after the prompt: keys 6 and 7 (full), 3 and 3 (window)
    assert attention_flops(s, [0] * 5, [[1, 2, 3]]) == per_pair * (15 + 12 + 6 + 7 + 3 + 3)
    # a second option beginning with the same token shares its first position: one more key set (7, 3)
    assert attention_flops(s, [0] * 5, [[1, 2, 3], [1, 4, 5]]) == per_pair * (15 + 12 + 6 + 7 + 3 + 3 + 7 + 3)


def test_scoring_flops_count_the_body_tokens_and_the_scored_output_rows():
    """What the throughput benchmarks call achieved work: a cloze request feeds its prompt and each option but its
    last token (a beginning that options share once), and needs the full distribution at the prompt's last
    position and at each position it feeds; a letter request only at its answer."""
    from persona_bench.scoring.requests import Request

    s = Shapes(linears={}, body_params=10, head_params=100, hidden=8, vocab=0, n_heads=2, head_dim=4, windows=[None])
    cloze = Request([0] * 5, option_ids=[[1, 2, 3], [4]])
    letter = Request([0] * 4, label_ids=[7, 8])
    w = scoring_flops(s, [cloze, letter])
    assert w["tokens"] == (5 + 2) + 4 and w["head_rows"] == (1 + 2) + 1
    assert w["linear"] == 2 * 10 * 11 and w["head"] == 2 * 100 * 4
    shared = Request([0] * 5, option_ids=[[1, 2, 3], [1, 2, 4], [1, 5]])  # fed: 1, 1 2 (shared), 1 (shared)
    assert scoring_flops(s, [shared])["tokens"] == 5 + 2 and scoring_flops(s, [shared])["head_rows"] == 1 + 2
    assert w["attention"] == attention_flops(s, cloze.prompt_ids, cloze.option_ids) + attention_flops(s, letter.prompt_ids)


def test_shape_ceiling_measures_the_model_shapes():
    s = Shapes(linears={(64, 128): 2, (128, 64): 1}, body_params=3 * 64 * 128, head_params=512 * 64, hidden=64,
               vocab=512, n_heads=2, head_dim=32, windows=[None])
    rates = shape_ceiling(s, "fp32", "cpu", tokens=64, head_rows=16, seconds_per_shape=0.02)
    assert rates["body"] > 0 and rates["head"] > 0


def test_auto_batch_budget_follows_free_memory(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from persona_bench.models.cost import (
        CPU_BATCH_TOKENS,
        GPU_SCORING_TOKENS,
        activation_bytes_per_token,
        auto_batch_tokens,
        tokens_for_memory,
    )

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"))
    assert auto_batch_tokens(model, torch.device("cpu"), "letter") == CPU_BATCH_TOKENS
    letter, cloze = activation_bytes_per_token(model, "letter"), activation_bytes_per_token(model, "cloze")
    assert 0 < letter < cloze  # cloze keeps the prompt's key/value cache for its option rows
    assert tokens_for_memory(2**30, 100_000) == 10_496  # 1 GiB / 100 kB = 10,737 tokens, down to a step of 256
    assert tokens_for_memory(10, 100_000) == 1024 and tokens_for_memory(2**40, 1) == 262144
    # On a GPU with room to spare, scoring stays at the measured best budget; generation takes the memory.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30))
    gpu = torch.device("cuda")
    assert auto_batch_tokens(model, gpu, "letter") == auto_batch_tokens(model, gpu, "cloze") == GPU_SCORING_TOKENS
    assert auto_batch_tokens(model, gpu, "generate") == 262144
    little = 2 * 4096 * letter  # half of it holds 4,096 tokens' activations: memory rules
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (little, little))
    assert auto_batch_tokens(model, gpu, "letter") == 4096


def test_output_layer_never_copies_its_weight_per_row():
    """The prompt pass of generation (logits at the last position only) in bf16: without a contiguous input
    to the output layer, torch broadcast the weight to one copy per row (8.7 GB for a batch of 26 demo
    prompts, killed for memory). No allocation may approach rows x vocabulary x hidden, and the logits
    stay the same."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from persona_bench.models.fastpath import contiguous_head

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=8,
                           max_position_embeddings=256)
    model = Gemma3ForCausalLM(cfg).to(torch.bfloat16).eval().requires_grad_(False)  # as models.load_model leaves it
    ids = torch.randint(3, 4000, (16, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = model(input_ids=ids, logits_to_keep=1).logits
    assert contiguous_head(model)
    with torch.inference_mode(), torch.profiler.profile(profile_memory=True) as prof:
        after = model(input_ids=ids, logits_to_keep=1).logits
    largest = max(e.cpu_memory_usage for e in prof.events())
    copy = ids.shape[0] * cfg.vocab_size * cfg.hidden_size * 2
    assert largest < copy / 8, f"an allocation of {largest} bytes: the output layer's weight was copied per row"
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_cudnn_attention_is_taken_out_on_cuda_only(monkeypatch):
    """cuDNN's attention builds a plan for every new (batch, length) shape: on CUDA load_model turns it off
    (benchmarks/README.md#gpu-check), on the CPU it touches nothing."""
    from persona_bench.models.devices import attention_kernels

    calls = []
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp", lambda on: calls.append(on))
    attention_kernels(torch.device("cpu"))
    assert calls == []
    attention_kernels(torch.device("cuda"))
    assert calls == [False]
