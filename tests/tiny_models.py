"""Tiny random-weight models with locally trained tokenizers, for offline tests.

``build_tiny_model(arch, out_dir, chat_template=None, seed=0)`` writes a model
directory that loads fully offline with ``AutoTokenizer.from_pretrained(dir)``
and ``AutoModelForCausalLM`` (llama, opt) or ``AutoModelForSeq2SeqLM`` (t5).

Nothing here touches the network: the tokenizer is trained with the
``tokenizers`` library on a small generated MMLU-like English corpus, and the
model is built from a config with ``torch.manual_seed(seed)``.

Tokenizers (vocabulary of roughly 800 entries, all answer labels are ordinary
vocabulary entries, not added tokens):

* llama: byte-level BPE. ``<unk>``=0, ``<s>``=1 (bos, prepended by
  ``tokenizer(text)``), ``</s>``=2 (eos, never added automatically),
  ``<pad>``=3, then chat tokens ``<|system|>``=4, ``<|user|>``=5,
  ``<|assistant|>``=6, ``<|end|>``=7.
* opt: byte-level BPE, mimicking OPT/GPT-2. ``<s>``=0 (unused), ``<pad>``=1,
  ``</s>``=2 (both bos and eos; prepended by ``tokenizer(text)``),
  ``<unk>``=3, chat tokens 4-7 as for llama.
* t5: BPE with a SentencePiece-like ``Metaspace`` pre-tokenizer ("\u2581A"), a
  normaliser that collapses every run of whitespace (newlines included) to one
  space, like T5's, and ``<unk>`` for characters outside printable ASCII.
  ``<pad>``=0 (also the decoder start token), ``</s>``=1 (eos, appended by
  ``tokenizer(text)``), ``<unk>``=2. No bos, no chat tokens. "A" and " A" are
  the same single piece "\u2581A".

Padding side is the library default (right) for every tokenizer: code that
needs left padding has to ask for it.

Chat templates (llama and opt only; every template uses the same vocabulary,
so the tokenizer and weights for one ``(arch, seed)`` do not depend on it):

* ``"system"`` (Phi-3-like): ``<|system|>\\n{persona}<|end|>\\n<|user|>\\n{q}<|end|>\\n``
  and, with ``add_generation_prompt``, ``<|assistant|>\\n``. No bos in the text.
* ``"no_system"`` (Gemma/Mistral-like): starts with ``{{ bos_token }}`` (as those
  templates do, so tokenizing the rendered text with ``add_special_tokens=True``
  gives a double bos), then the same turns as ``"system"``; raises
  ``TemplateError('System role not supported')`` on a system message, and on
  roles that do not alternate user/assistant.
* ``"drops_system"``: like ``"system"`` but silently skips system messages.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ARCHS = ("llama", "opt", "t5")
CHAT_TEMPLATE_KINDS = (None, "system", "no_system", "drops_system")

VOCAB_SIZE_TARGET = 800
MAX_POSITIONS = 512

LETTERS = ("A", "B", "C", "D")
DIGITS = ("1", "2", "3", "4")
LABELS = LETTERS + DIGITS

CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

_SPECIALS = {
    # In id order; the ids are asserted after training.
    "llama": ("<unk>", "<s>", "</s>", "<pad>") + CHAT_TOKENS,
    "opt": ("<s>", "<pad>", "</s>", "<unk>") + CHAT_TOKENS,
    "t5": ("<pad>", "</s>", "<unk>"),
}

_TOKEN_ROLES = {
    "llama": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "opt": {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "t5": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
}

_SYSTEM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_NO_SYSTEM_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_DROPS_SYSTEM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

CHAT_TEMPLATES = {
    "system": _SYSTEM_TEMPLATE,
    "no_system": _NO_SYSTEM_TEMPLATE,
    "drops_system": _DROPS_SYSTEM_TEMPLATE,
}

# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

_SUBJECTS = (
    "abstract algebra", "anatomy", "astronomy", "business ethics", "clinical knowledge",
    "college biology", "college chemistry", "college computer science", "college mathematics",
    "college medicine", "college physics", "computer security", "conceptual physics",
    "econometrics", "electrical engineering", "elementary mathematics", "formal logic",
    "global facts", "high school biology", "high school chemistry", "high school geography",
    "high school european history", "high school government and politics",
    "high school macroeconomics", "high school psychology", "human aging", "international law",
    "jurisprudence", "logical fallacies", "machine learning", "management", "marketing",
    "medical genetics", "moral disputes", "nutrition", "philosophy", "prehistory",
    "professional accounting", "professional law", "professional medicine", "public relations",
    "security studies", "sociology", "us foreign policy", "virology", "world religions",
)

_PERSONAS = (
    "You are a doctor.", "You are a lawyer.", "You are a helpful assistant.",
    "You are a math teacher.", "You are an expert in physics.", "You are a historian.",
    "You are a software engineer.", "You are a nurse.", "You are a student.",
    "You are a chemist.", "You are a biologist.", "You are an economist.",
    "You are a philosopher.", "You are a judge.", "You are a farmer.", "You are a pilot.",
    "You are a careful and honest assistant.", "You are a professor of medicine.",
    "You are an accountant.", "You are a psychologist.", "You are a child.",
)

_NOUNS = (
    "capital", "function", "structure", "cause", "effect", "value", "result", "purpose",
    "source", "role", "origin", "property", "definition", "example", "process", "theory",
    "principle", "element", "energy", "force", "cell", "organ", "market", "price", "court",
    "contract", "country", "river", "city", "number", "equation", "system", "network",
    "protein", "gene", "virus", "planet", "star", "language", "religion", "treaty", "war",
    "company", "patient", "disease", "treatment", "argument", "premise", "conclusion",
)

_ADJECTIVES = (
    "main", "primary", "most likely", "best", "correct", "following", "largest", "smallest",
    "first", "second", "final", "common", "rare", "important", "true", "false", "average",
    "total", "natural", "legal", "moral", "chemical", "physical", "biological", "economic",
)

_ANSWER_WORDS = (
    "Paris", "London", "Berlin", "Madrid", "Rome", "water", "oxygen", "carbon", "hydrogen",
    "nitrogen", "the heart", "the liver", "the brain", "the lungs", "mitochondria", "nucleus",
    "inflation", "demand", "supply", "interest rates", "the Senate", "the President",
    "the court", "Newton", "Einstein", "Darwin", "Plato", "Aristotle", "Kant", "Rousseau",
    "photosynthesis", "respiration", "evolution", "gravity", "friction", "momentum", "velocity",
    "acceleration", "None of the above", "All of the above", "Both A and B", "True, True",
    "False, False", "True, False", "False, True", "increase", "decrease", "remain the same",
    "it depends", "a virus", "a bacterium", "a fungus", "an enzyme", "a hormone", "an atom",
)

_FILLER = (
    "The following are multiple choice questions (with answers) about {subject}.",
    "Answer the following question. Reply with the letter of the correct option.",
    "Answer with only the number of the correct option.",
    "Which of the following is the {adj} {noun} of {word}?",
    "What is the {adj} {noun} of the {noun2}?",
    "Which {noun} is {adj} for {word}?",
    "In {subject}, the {noun} of a {noun2} is called what?",
    "A {noun} has a {adj} {noun2}. What happens to the {noun2} when the {noun} changes?",
    "Why does the {noun} {verb} the {noun2}?",
    "Statement 1 | Every {noun} is a {noun2}. Statement 2 | Some {noun2} is {adj}.",
    "The answer is ({letter}).",
    "The correct answer is {letter}.",
    "The correct option is {digit}.",
    "Let's think step by step.",
    "Think carefully and give your best answer.",
)

_VERBS = (
    "increase", "decrease", "change", "affect", "control", "explain", "describe", "cause",
    "prevent", "support", "reduce", "produce", "require", "contain", "measure", "protect",
)


def _corpus() -> list[str]:
    """Deterministic MMLU-like corpus (independent of the model seed)."""
    rng = random.Random(20240601)
    lines: list[str] = []

    def fill(template: str) -> str:
        return template.format(
            subject=rng.choice(_SUBJECTS),
            adj=rng.choice(_ADJECTIVES),
            noun=rng.choice(_NOUNS),
            noun2=rng.choice(_NOUNS),
            word=rng.choice(_ANSWER_WORDS),
            verb=rng.choice(_VERBS),
            letter=rng.choice(LETTERS),
            digit=rng.choice(DIGITS),
        )

    for _ in range(600):
        persona = rng.choice(_PERSONAS)
        header = fill(_FILLER[0])
        question = fill(rng.choice(_FILLER[3:10]))
        options = rng.sample(_ANSWER_WORDS, 4)
        if rng.random() < 0.2:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            question = f"What is {a} + {b}?"
            options = [str(a + b + d) for d in rng.sample(range(-3, 4), 4)]
        use_digits = rng.random() < 0.35
        labels = DIGITS if use_digits else LETTERS
        opts = "\n".join(f"{lab}. {opt}" for lab, opt in zip(labels, options))
        answer = rng.choice(labels)
        lines.append(f"{persona}\n{header}\n\n{question}\n{opts}\nAnswer: {answer}")
        lines.append(f"{question}\n{opts}\nAnswer:\n{answer}")
        lines.append(f"{persona} {fill(rng.choice(_FILLER[1:3]))} Answer: {answer}\n{answer}")
        lines.append(fill(rng.choice(_FILLER[10:])))
    # Every label, alone and after a space, with and without a newline around it.
    for lab in LABELS:
        lines.extend([lab, f" {lab}", f"Answer: {lab}", f"\n{lab}\n", f"({lab})", f"{lab}."] * 20)
    lines.extend(_PERSONAS)
    lines.extend(_SUBJECTS)
    return lines


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

_ALPHABET = [chr(c) for c in range(33, 127)]  # printable ASCII; spaces become "\u2581"


def _train_backend(arch: str):
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = list(_SPECIALS[arch])
    corpus = _corpus()
    if arch in ("llama", "opt"):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE_TARGET,
            min_frequency=2,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=trainer)
        bos = _TOKEN_ROLES[arch]["bos_token"]
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0",
                    pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                    special_tokens=[(bos, tok.token_to_id(bos))],
                ),
            ]
        )
    else:
        # SentencePiece-like, as T5: Metaspace pieces ("\u2581the"), whitespace runs
        # (newlines included) collapsed to one space, unknown characters -> <unk>.
        # BPE rather than Unigram: the Unigram trainer is not deterministic
        # across processes (it appends pruned characters in hash-set order).
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"\s+"), " ")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
        trainer = trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE_TARGET,
            min_frequency=2,
            special_tokens=specials,
            initial_alphabet=_ALPHABET + ["\u2581"],
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="$A:0 </s>:0",
            pair="$A:0 </s>:0 $B:1 </s>:1",
            special_tokens=[("</s>", tok.token_to_id("</s>"))],
        )
    for i, name in enumerate(specials):
        got = tok.token_to_id(name)
        if got != i:
            raise RuntimeError(f"{arch}: special token {name!r} has id {got}, expected {i}")
    return tok


def _wrap(arch: str, backend):
    from transformers import PreTrainedTokenizerFast

    kwargs = dict(_TOKEN_ROLES[arch])
    if arch == "t5":
        kwargs.update(add_bos_token=False, add_eos_token=True)
    else:
        kwargs.update(add_bos_token=True, add_eos_token=False)
        kwargs["extra_special_tokens"] = list(CHAT_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def check_tokenizer(arch: str, tok) -> None:
    """Raise if `tok` (a transformers tokenizer) lacks the properties tests rely on."""
    ids = lambda text, special=True: tok(text, add_special_tokens=special).input_ids  # noqa: E731
    added = set(tok.added_tokens_encoder)
    vocab = tok.get_vocab()

    def one_token(label: str, context: str, with_label: str) -> None:
        base, full = ids(context), ids(with_label)
        if len(full) != len(base) + 1:
            raise RuntimeError(
                f"{arch}: {with_label!r} is not {context!r} plus one token: "
                f"{tok.convert_ids_to_tokens(full)} vs {tok.convert_ids_to_tokens(base)}"
            )
        if arch != "t5" and full[:-1] != base:
            raise RuntimeError(f"{arch}: prefix {context!r} tokenizes differently once {label!r} follows")
        if tok.convert_ids_to_tokens(full[-1 if arch != "t5" else -2]) in added:
            raise RuntimeError(f"{arch}: label {label!r} is an added token, not vocabulary")

    if arch == "t5":
        if ids("Answer: A") != ids("Answer: A", special=False) + [tok.eos_token_id]:
            raise RuntimeError("t5: tokenizer(text) must append eos and add nothing in front")
        for lab in LABELS:
            for text in (lab, f" {lab}"):
                got = ids(text, special=False)
                if len(got) != 1:
                    raise RuntimeError(f"t5: {text!r} is not one token: {tok.convert_ids_to_tokens(got)}")
                if tok.convert_ids_to_tokens(got[0]) in added:
                    raise RuntimeError(f"t5: {text!r} is an added token, not vocabulary")
            one_token(lab, "Answer:", f"Answer: {lab}")
        return

    if ids("Answer:") != [tok.bos_token_id] + ids("Answer:", special=False):
        raise RuntimeError(f"{arch}: tokenizer(text) must prepend bos and append nothing")
    for lab in LABELS:
        one_token(f" {lab}", "Answer:", f"Answer: {lab}")
        one_token(lab, "Answer:\n", f"Answer:\n{lab}")
        one_token(lab, "<|assistant|>\n", f"<|assistant|>\n{lab}")
        if f"\u0120{lab}" not in vocab or lab not in vocab:
            raise RuntimeError(f"{arch}: {lab!r} or ' {lab}' missing from the vocabulary")
    for name in CHAT_TOKENS:
        if len(ids(name, special=False)) != 1:
            raise RuntimeError(f"{arch}: chat token {name!r} is not one token")
    if not 500 <= len(tok) <= 1000:
        raise RuntimeError(f"{arch}: vocabulary of {len(tok)} is outside 500-1000")


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


# Every linear layer's input is a multiple of 64 wide: bitsandbytes quantizes 4-bit weights in blocks
# of 64 inputs, and its packed CPU path (taken on CPUs with AVX512-BF16) fails on narrower layers.
WIDTH = 64


def _config(arch: str, tok):
    import torch
    from transformers import LlamaConfig, OPTConfig, T5Config

    vocab = len(tok)
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab,
            hidden_size=WIDTH,
            intermediate_size=2 * WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=MAX_POSITIONS,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False,
            dtype=torch.float32,
        )
    if arch == "opt":
        return OPTConfig(
            vocab_size=vocab,
            hidden_size=WIDTH,
            ffn_dim=2 * WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=WIDTH,
            max_position_embeddings=MAX_POSITIONS,
            do_layer_norm_before=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
            dtype=torch.float32,
        )
    return T5Config(
        vocab_size=vocab,
        d_model=WIDTH,
        d_ff=2 * WIDTH,
        d_kv=WIDTH // 4,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="relu",
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        dtype=torch.float32,
    )


def build_tiny_model(arch: str, out_dir: Path, chat_template: str | None = None, seed: int = 0) -> Path:
    """Build a tiny random model plus tokenizer for `arch` and save both to `out_dir`.

    arch: "llama" | "opt" | "t5". chat_template: None | "system" | "no_system" |
    "drops_system" (llama and opt only). Returns `out_dir`. Same arguments give
    byte-identical weights and tokenizer files.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        LlamaForCausalLM,
        OPTForCausalLM,
        T5ForConditionalGeneration,
    )

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if chat_template not in CHAT_TEMPLATE_KINDS:
        raise ValueError(f"unknown chat_template {chat_template!r}; expected one of {CHAT_TEMPLATE_KINDS}")
    if arch == "t5" and chat_template is not None:
        raise ValueError("t5 models get no chat template")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tok = _wrap(arch, _train_backend(arch))
    if chat_template is not None:
        tok.chat_template = CHAT_TEMPLATES[chat_template]
    tok.save_pretrained(out_dir)
    # Check what a test will actually load, not the in-memory object.
    tok = AutoTokenizer.from_pretrained(out_dir)
    check_tokenizer(arch, tok)

    config = _config(arch, tok)
    model_cls = {"llama": LlamaForCausalLM, "opt": OPTForCausalLM, "t5": T5ForConditionalGeneration}[arch]
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    gen = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False, max_new_tokens=8)
    if arch == "t5":
        gen["decoder_start_token_id"] = tok.pad_token_id
    else:
        gen["bos_token_id"] = tok.bos_token_id
    model.generation_config = GenerationConfig(**gen)
    model.save_pretrained(out_dir)
    (out_dir / "tiny_model.json").write_text(json.dumps({"arch": arch, "chat_template": chat_template, "seed": seed}))
    return out_dir
