"""Answer labels and continuations as the tokens the model sees after a prompt.

A label or option is tokenized as the tokenizer splits prompt + text (a leading space after
"Answer:", none after a newline or a chat header); letter scoring needs single-token labels."""

from __future__ import annotations

from persona_bench.inputs.prompts import continuation
from persona_bench.scoring.requests import TokenizationError


def encode(tokenizer, text: str, add_special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def suffix_ids(tokenizer, prompt: str, prompt_ids: list[int], suffix: str, add_special: bool) -> list[int]:
    """The tokens `suffix` adds after `prompt`, as the tokenizer splits prompt+suffix.

    Falls back to encoding the suffix alone when the joint encoding changes the
    prompt's own tokens (a merge across the boundary)."""
    return _split_suffix(tokenizer, prompt_ids, encode(tokenizer, prompt + suffix, add_special), suffix, add_special)


def suffix_ids_many(tokenizer, prompts: list[str], prompt_ids: list[list[int]], suffixes: list[str],
                    add_special: list[bool]) -> list[list[int]]:
    """`suffix_ids` of many (prompt, suffix) pairs, with one batched tokenizer call per special-token
    mode instead of one call per pair (the calls took 84% of building a cloze grid)."""
    out: list = [None] * len(prompts)
    for mode in (True, False):
        idx = [i for i, s in enumerate(add_special) if s is mode]
        if idx:
            wholes = tokenizer([prompts[i] + suffixes[i] for i in idx], add_special_tokens=mode)["input_ids"]
            for i, whole in zip(idx, wholes):
                out[i] = _split_suffix(tokenizer, prompt_ids[i], whole, suffixes[i], mode)
    return out


def _split_suffix(tokenizer, prompt_ids: list[int], whole: list[int], suffix: str, add_special: bool) -> list[int]:
    n = len(prompt_ids)
    if tokenizer.eos_token_id is not None and add_special and prompt_ids and prompt_ids[-1] == tokenizer.eos_token_id:
        n -= 1  # tokenizers that append EOS (T5): compare without it
        whole = whole[:-1]
    if whole[:n] == prompt_ids[:n] and len(whole) > n:
        return whole[n:]
    return encode(tokenizer, suffix, False)


class LabelResolver:
    """Answer-label token ids per tokenizer, with or without a leading space as the model
    would emit them after the prompt; checked to be single tokens."""

    def __init__(self, tokenizer, arch: str):
        self.tokenizer, self.arch = tokenizer, arch
        self._cache: dict = {}

    def __call__(self, prompt: str, prompt_ids: list[int], labels: tuple[str, ...], add_special: bool) -> list[int]:
        key = (prompt[-24:], labels, add_special)
        if key not in self._cache:
            ids = []
            for label in labels:
                if self.arch == "seq2seq":  # the decoder's first token
                    toks = encode(self.tokenizer, label, False)
                    shown = label
                else:
                    shown = continuation(prompt, label)
                    toks = suffix_ids(self.tokenizer, prompt, prompt_ids, shown, add_special)
                if len(toks) != 1:
                    raise TokenizationError(
                        f"answer label {shown!r} is {len(toks)} tokens {toks} for this tokenizer; letter scoring needs "
                        "single-token labels: use scoring=cloze or another scoring.format"
                    )
                ids.append(toks[0])
            if len(set(ids)) != len(ids):
                raise TokenizationError(f"answer labels {labels} map to repeated token ids {ids}")
            self._cache[key] = ids
        return self._cache[key]

    def split(self, prompt: str, prompt_ids: list[int], labels: tuple[str, ...], add_special: bool) -> tuple[list[int], list[int]]:
        """(prefix, label ids): single-token labels have no prefix; labels that are one shared prefix plus
        one distinct token each (Gemma writes " 1" as a space token, then "1") get that prefix, so their
        logits can be read one position later, after the prompt and the prefix. Else TokenizationError."""
        try:
            return [], self(prompt, prompt_ids, labels, add_special)
        except TokenizationError:
            if self.arch == "seq2seq":
                raise
        toks = [suffix_ids(self.tokenizer, prompt, prompt_ids, continuation(prompt, lab), add_special) for lab in labels]
        prefix = toks[0][:-1]
        last = [t[-1] for t in toks if t]
        if not prefix or any(t[:-1] != prefix for t in toks) or len(set(last)) != len(toks):
            raise TokenizationError(f"answer labels {labels} are the tokens {toks} for this tokenizer: neither single "
                                    "tokens nor one shared prefix plus one distinct token each")
        return prefix, last
