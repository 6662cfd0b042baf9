"""scoring=generate: batched generation, per-prompt seeds, the repetition penalty and sampling filters,
parsed answers on every row, exact resume, the model's own persona pick, and the vLLM backend's contract.

Tiny random models answer gibberish, so the tests that need readable answers replace the generator
with one that writes given texts; the tests of decoding itself run the real transformers loop.
"""

import json
import signal
import sys
import types

import pandas as pd
import pytest
import torch
from helpers import tiny_cfg

from persona_bench.backends.hf import HFBackend
from persona_bench.config.schema import GenerateConfig
from persona_bench.run import steps
from persona_bench.run.runner import Interrupted, run
from persona_bench.run.store import JobStore
from persona_bench.scoring.generate import Decoder, Speedups, decode, generate_batch, generate_batch_hf, prompt_seed
from persona_bench.scoring.parse import parse_answer
from persona_bench.scoring.requests import Request, Result


def load(tiny_model_dir, arch="llama"):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    d = tiny_model_dir(arch)
    tok = AutoTokenizer.from_pretrained(d)
    model = (AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM).from_pretrained(d).eval()
    return model, tok


PROMPTS = ["Question: what is the capital of France?\nAnswer:", "Hello there",
           "A much longer prompt about physics, the speed of light and the mass of the moon.\nAnswer:"]


@pytest.mark.parametrize("arch", ["llama", "opt", "t5"])
@pytest.mark.parametrize("decoding", ["greedy", "sampled"])
def test_an_answer_does_not_depend_on_its_batch(tiny_model_dir, arch, decoding):
    model, tok = load(tiny_model_dir, arch)
    settings = GenerateConfig(decoding=decoding, max_new_tokens=6, repetition_penalty=1.1 if decoding == "sampled" else 1.0)
    reqs = [Request(tok(p)["input_ids"], label_ids=[5, 9], seed=prompt_seed(0, str(i))) for i, p in enumerate(PROMPTS)]
    pad = tok.pad_token_id
    kind = "seq2seq" if arch == "t5" else "causal"
    together = generate_batch(model, tok, reqs, kind, pad, settings)
    alone = [generate_batch(model, tok, [r], kind, pad, settings)[0] for r in reqs]
    reversed_ = generate_batch(model, tok, reqs[::-1], kind, pad, settings)[::-1]
    for a, b, c in zip(together, alone, reversed_):
        assert a.generation == b.generation == c.generation and a.n_new_tokens == b.n_new_tokens
        assert a.scores == pytest.approx(b.scores, abs=1e-5)  # the labels' logits at the first generated position
    assert all(r.n_new_tokens <= 6 for r in together)


def after(limits):
    """A stop for scoring.generate.decode: row i stops at its limits[i]-th new token."""
    seen = [0] * len(limits)

    def stop(row, text):
        seen[row] += 1
        return seen[row] >= limits[row]
    return stop


@pytest.mark.parametrize("arch,decoding", [("llama", "sampled"), ("opt", "greedy"), ("t5", "sampled")])
def test_the_loop_writes_what_transformers_generate_writes_until_the_row_stops(tiny_model_dir, arch, decoding):
    """scoring.generate.decode against model.generate (12 tokens, the same processor). Unstopped: the same texts and
    bit-identical label logits. Stopped (rows at different steps, so the rows that go on do so after others
    left the batch and their cache rows were selected out): every row's tokens are transformers' tokens up to
    the step where its stop fired. A stop per row and step stands in for the parser's (tiny models write
    no "Question:")."""
    model, tok = load(tiny_model_dir, arch)
    settings = GenerateConfig(decoding=decoding, max_new_tokens=12, repetition_penalty=1.1 if decoding == "sampled" else 1.0)
    reqs = [Request(tok(p)["input_ids"], label_ids=[5, 9], seed=prompt_seed(0, str(i))) for i, p in enumerate(PROMPTS * 2)]
    kind, pad = ("seq2seq" if arch == "t5" else "causal"), tok.pad_token_id
    ref = generate_batch_hf(model, tok, reqs, kind, pad, settings)
    assert all(r.n_new_tokens == 12 for r in ref)  # tiny random models write no end-of-sequence token here
    got = generate_batch(model, tok, reqs, kind, pad, settings)
    assert [r.generation for r in got] == [r.generation for r in ref] and [r.scores for r in got] == [r.scores for r in ref]
    assert [parse_answer(r.generation, "1234", "abcd") for r in got] == [parse_answer(r.generation, "1234", "abcd") for r in ref]

    width = max(len(r.prompt_ids) for r in reqs)

    def tokens(speed=None, stop=None, prompt_tokens=0):
        n_pad = [0] * len(reqs) if kind == "seq2seq" else [width - len(r.prompt_ids) for r in reqs]
        dec = Decoder(settings, reqs, n_pad, model.device)
        return decode(model, tok, reqs, kind, pad, 12, [], dec.process, stop, speed or Speedups(), prompt_tokens)

    whole = tokens()
    assert tokens(prompt_tokens=2 * width) == whole  # the prompt pass in groups of two rows, caches joined
    limits = [1 + 2 * i for i in range(len(reqs))]  # row i stops after 1 + 2i tokens
    cut = tokens(stop=after(limits))
    assert [len(c) for c in cut] == [min(n, 12) for n in limits]
    assert all(c == w[:len(c)] for c, w in zip(cut, whole))
    kept = tokens(Speedups(rows_leave=False), stop=after(limits))
    assert kept == cut  # finished rows fed padding to the end instead: the same tokens


def test_sampling_follows_the_seed(tiny_model_dir):
    model, tok = load(tiny_model_dir)
    settings = GenerateConfig(decoding="sampled", max_new_tokens=8)
    ids = tok(PROMPTS[0])["input_ids"]
    texts = [generate_batch(model, tok, [Request(ids, seed=s)], "causal", tok.pad_token_id, settings)[0].generation
             for s in (1, 1, 2, 3, 4)]
    assert texts[0] == texts[1]  # the same seed: the same answer
    assert len(set(texts[1:])) > 1  # other seeds: other answers
    greedy = GenerateConfig(max_new_tokens=8)
    assert len({generate_batch(model, tok, [Request(ids, seed=s)], "causal", tok.pad_token_id, greedy)[0].generation
                for s in (1, 2, 3)}) == 1  # greedy ignores seeds


def test_repetition_penalty_is_hf_and_vllms_and_skips_padding():
    s = GenerateConfig(repetition_penalty=2.0)
    dec = Decoder(s, [Request([1, 2]), Request([3])], n_pad=[0, 1], device="cpu")
    ids = torch.tensor([[1, 2], [0, 3]])  # row 1 is left-padded with token 0
    scores = torch.tensor([[4.0, -4.0, 4.0, 4.0], [4.0, 4.0, 4.0, -4.0]])
    out = dec._penalise(ids, scores.clone())
    assert out.tolist() == [[4.0, -8.0, 2.0, 4.0], [4.0, 4.0, 4.0, -8.0]]  # seen: /2 if positive, x2 if negative


@pytest.mark.parametrize("top_k,top_p,allowed", [(2, 1.0, {0, 1}), (0, 0.45, {0}), (0, 0.75, {0, 1}), (3, 0.9, {0, 1, 2}), (0, 0.9, {0, 1, 2})])
def test_top_k_and_top_p_sample_only_the_kept_tokens(top_k, top_p, allowed):
    s = GenerateConfig(decoding="sampled", top_k=top_k, top_p=top_p)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    seen = set()
    for seed in range(200):
        dec = Decoder(s, [Request([1], seed=seed)], n_pad=[0], device="cpu")
        out = dec(torch.tensor([[1]]), probs.log())
        assert torch.isfinite(out).sum() == 1  # a one-hot choice for the greedy loop
        seen.add(int(out.argmax()))
    assert seen == allowed


def fake_generator(texts):
    """HFBackend.generate answering each prompt with the text keyed by its length (cycled)."""
    def generate(self, reqs, settings):
        return [Result(scores=[0.1, 0.9, 0.0, 0.0][: len(r.label_ids)] if r.label_ids else [], probs=[],
                       generation=texts[len(r.prompt_ids) % len(texts)], n_new_tokens=3) for r in reqs]
    return generate


def gen_cfg(tiny_model_dir, out, **over):
    over.setdefault("model__batch_tokens", 120)  # several batches on the tiny grid (x4 for generation)
    return tiny_cfg(tiny_model_dir("llama", "system"), "llama", out, scoring__method="generate",
                    scoring__format="auto", **over)


def test_generated_answers_are_parsed_on_every_row(tiny_model_dir, tmp_path, monkeypatch):
    texts = [" 2. because", "I don't know", " 3", "The answer is (4)."]
    monkeypatch.setattr(HFBackend, "generate", fake_generator(texts))
    out = tmp_path / "g"
    cfg = gen_cfg(tiny_model_dir, out)
    cfg.report.enabled = cfg.report.self_pick = True  # report.enabled: every after-run step's switch
    monkeypatch.setattr(steps, "write_report", lambda *a, **k: {})  # the report itself: tests/test_report.py
    summary = run(cfg)
    df = pd.read_parquet(out / "predictions.parquet")
    expect = {" 2. because": 1, "I don't know": -1, " 3": 2, "The answer is (4).": 3}
    assert set(df["generation"]) <= set(texts)
    assert (df["pred"] == df["generation"].map(expect)).all()
    assert (df["parsed"] == (df["pred"] >= 0)).all()
    assert (df["correct"] == (df["pred"] == df["answer"])).all() and not df.loc[~df["parsed"], "correct"].any()
    assert (df["logit_pred"] == 1).all()  # the labels' logits (0.1, 0.9, ...) on the same prompt
    assert set(df["scoring"]) == {"generate"} and set(df["format"]) == {"paper"}
    assert df["prompt"].str.contains("Reply with only the option number.").all()
    gen = summary["generation"]
    assert gen["parse_failure_rate"]["all"] == pytest.approx((df["pred"] == -1).mean(), abs=1e-6)
    assert summary["scoring"]["generate"]["decoding"] == "greedy"
    assert summary["scoring"]["generate"]["max_new_tokens"] == 32
    picks = pd.read_parquet(out / "self_pick.parquet")
    assert len(picks) == df["question_id"].nunique() and set(picks.columns) >= {"question_id", "generation", "parsed", "role"}
    assert picks["prompt"].str.contains("Roles: 1. doctor, 2. friend.").all()
    assert set(picks["role"].dropna()) <= {"doctor", "friend"}  # " 2. because" -> friend, "I don't know" -> none
    assert (picks["parsed"] == picks["role"].notna()).all()


def test_interrupted_sampled_generation_resumes_to_the_same_answers(tiny_model_dir, tmp_path, monkeypatch):
    over = dict(scoring__generate=GenerateConfig(decoding="sampled", max_new_tokens=4, repetition_penalty=1.1))
    run(gen_cfg(tiny_model_dir, tmp_path / "ref", **over))
    reference = pd.read_parquet(tmp_path / "ref" / "predictions.parquet")
    out = tmp_path / "job"
    real, count = JobStore.save, {"n": 0}

    def save(self, *args):
        if count["n"] == 2:
            raise Interrupted(signal.SIGTERM)
        count["n"] += 1
        real(self, *args)

    monkeypatch.setattr(JobStore, "save", save)
    with pytest.raises(Interrupted):
        run(gen_cfg(tiny_model_dir, out, **over))
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.undo()
    # A different batch budget on the rerun: other batch-mates, the same answers (per-prompt seeds).
    summary = run(gen_cfg(tiny_model_dir, out, model__batch_tokens=60, **over))
    assert summary["throughput"]["prompts_resumed"] > 0
    got = pd.read_parquet(out / "predictions.parquet")
    pd.testing.assert_frame_equal(got.drop(columns=["scores", "label_probs", "label_mass"]),
                                  reference.drop(columns=["scores", "label_probs", "label_mass"]))


class FakeVLLM(types.ModuleType):
    """Records what the backend asks vLLM for and answers like vLLM's RequestOutput."""

    def __init__(self):
        super().__init__("vllm")
        self.calls = []
        fake = self

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class LLM:
            def __init__(self, **kw):
                fake.engine = kw

            def generate(self, prompts, params, use_tqdm=False):
                fake.calls.append((prompts, params))
                lp = types.SimpleNamespace
                return [lp(outputs=[lp(text=" 3.", token_ids=[7, 8], logprobs=[{11: lp(logprob=-2.0), 12: lp(logprob=-0.5)}])])
                        for _ in prompts]

        self.SamplingParams, self.LLM = SamplingParams, LLM


def test_vllm_backend_asks_for_the_configured_decoding(monkeypatch):
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from persona_bench.backends.vllm import generate_vllm, load_vllm

    llm = load_vllm(None, "/models/x", "main", "bf16")
    assert fake.engine["dtype"] == "bfloat16" and fake.engine["trust_remote_code"] is False
    reqs = [Request([1, 2, 3], label_ids=[10, 11, 12, 13], seed=41), Request([4, 5], label_ids=[], seed=42)]
    paper = GenerateConfig(decoding="sampled", repetition_penalty=1.1, max_new_tokens=32)
    res = generate_vllm(llm, reqs, paper)
    prompts, params = fake.calls[-1]
    assert prompts == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5]}]
    assert [p.kw["seed"] for p in params] == [41, 42]
    assert params[0].kw["temperature"] == 1.0 and params[0].kw["repetition_penalty"] == 1.1
    assert params[0].kw["max_tokens"] == 32 and params[0].kw["logprobs"] == 20 and params[1].kw["logprobs"] is None
    assert res[0].generation == " 3." and res[0].n_new_tokens == 2
    assert res[0].pred == 2  # label 12 has the highest first-token log-probability among those returned
    assert res[1].scores == [] and res[1].pred == -1
    generate_vllm(llm, reqs[:1], GenerateConfig())
    greedy = fake.calls[-1][1][0].kw
    assert greedy["temperature"] == 0.0 and greedy["seed"] is None


def test_generation_figures_reach_wandb_as_flat_keys():
    from persona_bench.run.tracking import summary_metrics

    summary = {"accuracy": {"control": 0.3}, "generation": {
        "parsed_accuracy": {"all": 0.5, "control": 0.4, "persona_mean": 0.52},
        "parse_failure_rate": {"all": 0.2, "control": 0.1, "persona": 0.21, "template": {"speaker": 0.25}},
        "logit": {"accuracy": {"all": 0.33}, "agreement": 0.61}}}
    m = summary_metrics(summary)
    assert m["generation/parsed_accuracy/persona_mean"] == 0.52 and m["generation/parse_failure_rate/all"] == 0.2
    assert m["generation/parse_failure_rate/template/speaker"] == 0.25 and m["generation/logit_agreement"] == 0.61
    assert m["generation/logit_accuracy/all"] == 0.33
    assert not any(k.startswith("generation/") for k in summary_metrics({"accuracy": {"control": 0.3}}))


@pytest.mark.slow
def test_the_embedded_models_parsed_answers_equal_transformers_generate(tmp_path):
    """The embedded Gemma 3 270M, scoring=generate on 12 of the demo's prompts: the loop's parsed answers and label
    logits equal model.generate's (32 tokens), with fewer tokens written (benchmarks/generation.py: more prompts)."""
    from helpers import compose_cfg

    from persona_bench.backends import load_backend
    from persona_bench.run.job import Job
    from persona_bench.run.setup import attach

    cfg = compose_cfg(["scoring=generate", "dataset.per_subject=1", "tracking=none", "progress=false"], out=str(tmp_path))
    job = Job.prepare(cfg)
    backend = load_backend(cfg, job.method)
    _, items = attach(job, backend)
    items = items[::37][:12]
    args = (backend.model, backend.tokenizer, [it.request for it in items], backend.arch, backend.pad_id, cfg.scoring.generate)
    fast, ref = generate_batch(*args), generate_batch_hf(*args)
    assert [parse_answer(r.generation, it.labels, it.options) for r, it in zip(fast, items)] == \
        [parse_answer(r.generation, it.labels, it.options) for r, it in zip(ref, items)]
    assert [r.scores for r in fast] == [r.scores for r in ref]
    assert sum(r.n_new_tokens for r in fast) < sum(r.n_new_tokens for r in ref)
