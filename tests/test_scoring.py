"""Scoring on tiny local models: batched, cached results equal a naive one-at-a-time reference."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from persona_bench.backends.hf import score_batch
from persona_bench.inputs.prompts import continuation, question_body
from persona_bench.inputs.questions import make_question
from persona_bench.run.batching import make_batches
from persona_bench.scoring.cloze import option_groups
from persona_bench.scoring.requests import Request, TokenizationError
from persona_bench.scoring.tokens import LabelResolver, suffix_ids

QUESTIONS = [
    make_question("s", "Which organelle makes ATP in the cell?", ["Nucleus", "Mitochondrion", "Ribosome", "Golgi body"], 1),
    make_question("s", "What is the answer?", ["one", "two words", "three little words", "four"], 0),
    make_question("s", "A very long question about physics and the speed of light in water, measured carefully?",
                  ["A", "faster than in air", "slower", "the same as in a vacuum by definition"], 2),
    make_question("s", "Pick", ["x", "y", "z", "w"], 3),
]


def load(tiny_model_dir, arch):
    d = tiny_model_dir(arch)
    auto = AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM
    return auto.from_pretrained(d, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(d)


def requests(tok, arch, method):
    out = []
    for q in QUESTIONS:
        body = question_body(q, "mmlu" if method == "letter" else "cloze", subject_header=False)
        prompt = "You are a doctor.\n" + body.text
        ids = tok(prompt)["input_ids"]
        if method == "letter":
            out.append(Request(ids, label_ids=LabelResolver(tok, "seq2seq" if arch == "t5" else "causal")(prompt, ids, body.labels, True)))
        elif arch == "t5":
            out.append(Request(ids, option_ids=[tok(continuation(prompt, o), add_special_tokens=False)["input_ids"] for o in body.options]))
        else:
            out.append(Request(ids, option_ids=[suffix_ids(tok, prompt, ids, continuation(prompt, o), True) for o in body.options]))
    return out


@torch.inference_mode()
def naive(model, arch, method, r: Request):
    """One request, no padding, no cache, full-sequence logits."""
    ids = torch.tensor([r.prompt_ids])
    if method == "letter":
        if arch == "t5":
            logits = model(input_ids=ids, decoder_input_ids=torch.tensor([[model.config.decoder_start_token_id]])).logits[0, 0]
        else:
            logits = model(input_ids=ids).logits[0, -1]
        return logits[r.label_ids].tolist()
    sums = []
    for o in r.option_ids:
        if arch == "t5":
            dec = torch.tensor([[model.config.decoder_start_token_id] + o[:-1]])
            lp = torch.log_softmax(model(input_ids=ids, decoder_input_ids=dec).logits[0].float(), -1)
            sums.append(sum(lp[j, t].item() for j, t in enumerate(o)))
        else:
            lp = torch.log_softmax(model(input_ids=torch.tensor([r.prompt_ids + o])).logits[0].float(), -1)
            n = len(r.prompt_ids)
            sums.append(sum(lp[n - 1 + j, t].item() for j, t in enumerate(o)))
    return sums


@pytest.mark.parametrize("arch", ["llama", "opt", "t5"])
@pytest.mark.parametrize("method", ["letter", "cloze"])
def test_batched_scores_equal_naive_reference(tiny_model_dir, arch, method):
    model, tok = load(tiny_model_dir, arch)
    reqs = requests(tok, arch, method)
    pad = tok.pad_token_id
    batched = score_batch(model, reqs, "seq2seq" if arch == "t5" else "causal", method, pad, "mean", budget=64)
    singles = [score_batch(model, [r], "seq2seq" if arch == "t5" else "causal", method, pad, "mean")[0] for r in reqs]
    for r, b, s in zip(reqs, batched, singles):
        ref = naive(model, arch, method, r)
        got = b.scores if method == "letter" else b.logprob_sum
        assert got == pytest.approx(ref, abs=1e-4)
        assert b.pred == s.pred
        assert b.probs == pytest.approx(s.probs, abs=1e-4)
        assert sum(b.probs) == pytest.approx(1.0)
        if method == "letter":
            assert 0 < b.label_mass < 1
        else:
            assert b.n_tokens == [len(o) for o in r.option_ids]
            assert b.scores == pytest.approx([x / n for x, n in zip(b.logprob_sum, b.n_tokens)])


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_answer_labels_are_single_tokens_with_leading_space(tiny_model_dir, arch):
    _, tok = load(tiny_model_dir, arch)
    prompt = "Q?\nAnswer:"
    ids = tok(prompt)["input_ids"]
    labels = LabelResolver(tok, "causal")(prompt, ids, ("A", "B", "C", "D"), True)
    assert labels == [tok(" " + x, add_special_tokens=False)["input_ids"][0] for x in "ABCD"]
    chat = "<|assistant|>\n"
    no_space = LabelResolver(tok, "causal")(chat, tok(chat)["input_ids"], ("A", "B"), True)
    assert no_space != labels[:2]  # after a newline the label has no leading space


def test_multi_token_label_is_refused(tiny_model_dir):
    _, tok = load(tiny_model_dir, "llama")
    with pytest.raises(TokenizationError, match="single-token labels"):
        LabelResolver(tok, "causal")("Answer:", tok("Answer:")["input_ids"], ("Mitochondrion", "B"), True)


def test_batches_are_longest_first_within_budget():
    reqs = [Request(list(range(n))) for n in (5, 50, 20, 50, 7)]
    batches = make_batches(reqs, budget=100)
    assert batches[0] == [1, 3] and sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    for b in batches:
        assert len(b) * max(len(reqs[i].prompt_ids) for i in b) <= 100


def test_cloze_batches_sort_by_prompt_and_count_option_rows():
    def req(n, opts):
        return Request(list(range(n)), option_ids=[list(range(k)) for k in opts])
    # prompt lengths 30, 10, 29, 11 with options of different lengths: the long prompts go together
        return Request(list(range(n)), option_ids=[list(range(100 * j, 100 * j + k)) for j, k in enumerate(opts, 1)])
    reqs = [req(30, [2, 2]), req(10, [20, 20]), req(29, [1, 1]), req(11, [3, 3])]
    batches = make_batches(reqs, budget=100)
    assert batches == [[0, 2], [3, 1]]
    for b in batches:  # rows x widest prompt + each row's option rows (options x longest option)
        width = max(len(reqs[i].prompt_ids) for i in b)
        opts = sum(len(reqs[i].option_ids) * max(map(len, reqs[i].option_ids)) for i in b)
        assert len(b) * width + opts <= 100


def test_option_groups_keep_padding_small():
    groups = option_groups([10, 1, 9, 0, 4, 5, 2], budget=100)
    assert groups == [[0, 2], [5, 4], [6], [1]]


@pytest.mark.slow
def test_embedded_model_cloze_equals_naive_reference():
    """Gemma 3's sliding-window cache and 262k-token head through the same cached path."""
    from helpers import compose_cfg

    from persona_bench.config.schema import default_cache_dir
    from persona_bench.inputs.dataset import load_questions
    from persona_bench.models.loading import load_model

    cfg = compose_cfg(["model.dtype=fp32"])
    model, tok, _ = load_model(cfg.model, "cpu", default_cache_dir())
    qs = load_questions(cfg.dataset.__class__(name="x", sample="mmlu_paper", subjects=["professional_law", "management"],
                                              per_subject=2))
    reqs = []
    for q in qs:
        prompt = "You are a lawyer.\n" + question_body(q, "cloze").text
        ids = tok(prompt)["input_ids"]
        reqs.append(Request(ids, option_ids=[suffix_ids(tok, prompt, ids, continuation(prompt, o), True) for o in q.choices]))
    got = score_batch(model, reqs, "causal", "cloze", tok.pad_token_id, "sum", budget=256)
    for r, g in zip(reqs, got):
        ref = naive(model, "llama", "cloze", r)
        assert g.logprob_sum == pytest.approx(ref, abs=2e-3, rel=1e-4)
        assert g.pred == max(range(len(ref)), key=lambda i: ref[i])


class _PrefixSensitiveTokenizer:
    """Characters as tokens, shifted by 1000 when the text starts with 'X': an option's tokens then
    depend on the persona at the start of the prompt, which the shared option tokens must notice."""
    eos_token_id = None

    def _ids(self, text):
        shift = 1000 if text.startswith("X") else 0
        return [ord(c) + shift for c in text]

    def __call__(self, text, add_special_tokens=True):
        if isinstance(text, list):
            return {"input_ids": [self._ids(t) for t in text]}
        return {"input_ids": self._ids(text)}


def _items(prompts, choices):
    from persona_bench.run.items import Item

    tok = _PrefixSensitiveTokenizer()
    return [Item(None, None, None, p, Request(tok(p)["input_ids"]), list(choices)) for p in prompts]


def test_option_tokens_are_shared_per_question_and_checked():
    from persona_bench.run.items import option_tokens

    tok = _PrefixSensitiveTokenizer()
    body = "Q: 2+2?\nAnswer:"
    prompts = [f"You are a {r}.\n{body}" for r in ("doctor", "friend", "janitor")]
    items = _items(prompts, [" four", " five"])
    option_tokens(items, [True] * 3, [body] * 3, tok, "causal")
    for it in items:
        assert it.request.option_ids == [suffix_ids(tok, it.prompt, it.request.prompt_ids, c, True) for c in it.choices]
    # A persona that changes how the options split: the check finds it and every prompt is tokenized in full.
    prompts.insert(1, f"Xenial you are.\n{body}")
    items = _items(prompts, [" four", " five"])
    option_tokens(items, [True] * 4, [body] * 4, tok, "causal")
    for it in items:
        assert it.request.option_ids == [suffix_ids(tok, it.prompt, it.request.prompt_ids, c, True) for c in it.choices]


def _tiny_gemma3(window: int):
    """A random Gemma 3 text model with sliding-window layers narrower than the test's prompts."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=window,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                           max_position_embeddings=128, pad_token_id=0)
    return Gemma3ForCausalLM(cfg).eval()


def _random_requests(n: int, seed: int = 1, option_vocab: int = 97) -> list[Request]:
    """Random prompts and options; a small `option_vocab` makes options that begin with the same tokens,
    are equal, or are one another's beginnings."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))  # noqa: E731
    return [Request([rand(1, 97) for _ in range(rand(3, 14))],
                    option_ids=[[rand(1, option_vocab) for _ in range(rand(1, 5))] for _ in range(rand(2, 5))])
            for _ in range(n)]


def test_option_tree_shares_the_options_common_beginnings():
    """Options that begin with the same tokens share those positions of the packed row; every option's
    next tokens are still predicted, equal options and an option that is another's beginning included."""
    from persona_bench.scoring.cloze import option_tree, packed_length

    options = [[5, 6, 7], [5, 6, 8], [5, 9], [5], [5, 6, 7], [4, 6, 7]]
    t = option_tree(options)
    assert t.tokens == [5, 6, 4, 6] and t.depth == [0, 1, 0, 1] and t.parent == [-1, 0, -1, 2]
    assert t.through == [[0, 1, 2, 4], [0, 1, 4], [5], [5]]
    assert packed_length(Request([1, 2, 3], option_ids=options)) == 3 + 4
    # Every (option, position) whose next token is scored is predicted by exactly one node, on its path.
    for seed in range(50):
        for r in _random_requests(5, seed, option_vocab=4):
            t = option_tree(r.option_ids)
            for j, o in enumerate(r.option_ids):
                nodes = [i for i, th in enumerate(t.through) if j in th]
                assert [t.tokens[i] for i in nodes] == o[:-1] and [t.depth[i] for i in nodes] == list(range(len(o) - 1))
                assert all(t.parent[b] == a for a, b in zip([-1] + nodes, nodes))


@pytest.mark.parametrize("window", [4, 64])
def test_packed_cloze_equals_reference_with_sliding_windows(window):
    """Cloze rows packed into one pass (prompt, then every option at the positions it would have after
    the prompt) give each option the log-likelihood of the whole sequence prompt + option, also where
    Gemma 3's sliding-window layers see fewer positions than the prompt has."""
    from persona_bench.scoring.cloze import packed_length

    model = _tiny_gemma3(window)
    reqs = _random_requests(7) + _random_requests(6, seed=3, option_vocab=4)  # the latter share beginnings
    shared = reqs[7:]
    assert sum(map(packed_length, shared)) < sum(len(r.prompt_ids) + sum(len(o) - 1 for o in r.option_ids) for r in shared)
    got = score_batch(model, reqs, "causal", "cloze", 0, "sum")
    assert model._persona_bench_packs is True
    for r, g in zip(reqs, got):
        assert g.logprob_sum == pytest.approx(naive(model, "llama", "cloze", r), abs=1e-4)
    alone = [score_batch(model, [r], "causal", "cloze", 0, "sum")[0] for r in reqs]
    for a, g in zip(alone, got):
        assert a.logprob_sum == pytest.approx(g.logprob_sum, abs=1e-4)


def test_packing_falls_back_to_the_cache_when_the_mask_is_not_honoured(monkeypatch, caplog):
    """A model (or transformers version) whose attention ignores the packed mask fails the once-per-model
    check against the cached path: scoring warns and goes on through the shared prompt cache."""
    import persona_bench.scoring.cloze as cloze

    model = _tiny_gemma3(64)
    monkeypatch.setattr(cloze, "_packed_masks", lambda model, full, pos: None)  # plain causal attention over the row
    reqs = _random_requests(5, seed=2)
    with caplog.at_level("WARNING"):
        got = score_batch(model, reqs, "causal", "cloze", 0, "sum")
    assert model._persona_bench_packs is False and "cannot be packed" in caplog.text
    for r, g in zip(reqs, got):
        assert g.logprob_sum == pytest.approx(naive(model, "llama", "cloze", r), abs=1e-4)


def test_packed_batches_count_whole_rows():
    """Causal cloze batches (packed=True) sort by packed row length (prompt plus every option but its
    last token) and cost rows x their widest row."""
    from persona_bench.scoring.cloze import packed_length

    def req(n, opts):  # options with no common beginning
        return Request(list(range(n)), option_ids=[list(range(100 * j, 100 * j + k)) for j, k in enumerate(opts, 1)])
    reqs = [req(30, [2, 2]), req(10, [20, 20]), req(29, [1, 1]), req(11, [3, 3])]
    assert [packed_length(r) for r in reqs] == [32, 48, 29, 15]
    batches = make_batches(reqs, budget=70, packed=True)
    assert batches == [[1], [0, 2], [3]]
    for b in batches:
        assert len(b) * max(packed_length(reqs[i]) for i in b) <= 70
