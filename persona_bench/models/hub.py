"""What a model's own small files say before any weight loads: conf/model/hf.yaml's values.

    python run.py model=hf model.path=Qwen/Qwen2.5-0.5B-Instruct

conf/model/hf.yaml writes its model-dependent keys as `${hf:KEY}`; the `hf` resolver (register_resolvers,
called by run.py) fills them in from the model's config.json, read from a local directory, the Hugging
Face cache or, failing both, by downloading that one file (hf_hub_download; never the weights):

    name        the id's last part as a folder name (Qwen/Qwen2.5-0.5B-Instruct -> Qwen2.5-0.5B-Instruct)
    source      local when model.path is a directory, else hub
    arch        seq2seq when config.json says is_encoder_decoder (T5, BART), else causal
    params_b, non_embedding_params_b
                config.json's own count (num_parameters) when it has one, else counted from its shapes
                (param_counts); 0.0 when the architecture's shapes are not known here (the plan says so)

A value set on the command line (model.arch=seq2seq, model.params_b=0.5) replaces the resolver. An id that
is neither a directory, nor cached, nor reachable is one Unavailable error naming it, before anything loads.

chat_template(...) reads tokenizer_config.json (and chat_template.jinja) the same way, for the dry-run
plan: whether the model has a chat template, and whether it takes a system turn (inputs.prompts decides
the placement from the loaded tokenizer with the same code).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from persona_bench.config.errors import ConfigError, Unavailable
from persona_bench.inputs.prompts import adds_default_system, resolve_placement

# model_type values whose MLP has two matrices (up, down), not three (gate, up, down)
PLAIN_MLP = {"gpt2", "gpt_neox", "gptj", "gpt_bigcode", "opt", "phi", "falcon", "bloom", "mpt", "codegen", "starcoder2"}

# read once per (path, revision, file) and process: what was found, or the error that was raised
_files: dict = {}


def safe_name(path: str) -> str:
    """A folder name for a model id or directory: its last part, with anything but letters, digits and
    '.-_' made '_' (Qwen/Qwen2.5-0.5B-Instruct -> Qwen2.5-0.5B-Instruct; ~/models/my model/ -> my_model)."""
    last = str(path).replace("\\", "/").rstrip("/").split("/")[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("._") or "model"
    return name.replace("..", "_")


def is_directory(path: str) -> bool:
    return Path(str(path)).expanduser().is_dir()


def _hub_download(repo: str, filename: str, revision: str) -> str:
    from huggingface_hub import hf_hub_download

    try:  # the cache first: no request at all when the file is there
        return hf_hub_download(repo, filename, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached
        return hf_hub_download(repo, filename, revision=revision)


def _missing_file(e: Exception) -> bool:
    """The repository answered, without this file (as opposed to: no repository, no network, no access)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    return isinstance(e, RemoteEntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError)


def unreachable(path: str, revision: str, e: Exception, filename: str = "config.json") -> Unavailable:
    """The one-line error for a model id that cannot be read."""
    kind = type(e).__name__
    why = {"RepositoryNotFoundError": "no such repository (or it is private)", "GatedRepoError": "a gated model",
           "RevisionNotFoundError": f"no revision {revision!r}",
           "LocalEntryNotFoundError": "not in the local cache, and the hub did not answer",
           "HFValidationError": "neither an existing directory nor a hub id"}.get(kind, kind)
    return Unavailable(f"model.path={path!r} (revision {revision}): its {filename} cannot be read ({why}); check the "
                       "network (is huggingface.co reachable?), HF_TOKEN in the environment for a gated model, the "
                       "id's spelling (ORG/NAME as on huggingface.co), or give a local directory written by "
                       "save_pretrained")


def read_file(path: str, revision: str, filename: str, required: bool = True) -> Optional[str]:
    """The text of one file of a model: from its directory, else the hub (cache first). A file the
    repository lacks is None unless `required`; no repository, network or access is Unavailable."""
    key = (str(path), revision, filename)
    if key not in _files:
        try:
            if is_directory(path):
                f = Path(str(path)).expanduser() / filename
                if not f.is_file() and required:
                    raise Unavailable(f"model.path={path!r} has no {filename}: not a directory written by "
                                      "save_pretrained (for a GGUF file there: model.gguf_file=NAME, and model.arch, "
                                      "model.params_b and model.non_embedding_params_b, which config.json would give)")
                _files[key] = f.read_text() if f.is_file() else None
            else:
                try:
                    _files[key] = Path(_hub_download(str(path), filename, revision)).read_text()
                except Exception as e:  # noqa: BLE001 - every hub failure becomes one message
                    if not required and _missing_file(e):
                        _files[key] = None
                    else:
                        raise unreachable(path, revision, e, filename) from None
        except Unavailable as e:
            _files[key] = e
    got = _files[key]
    if isinstance(got, Exception):
        raise got
    return got


def was_read(path: str, revision: str = "main") -> bool:
    """Whether this process has read the model's config.json (its directory, cache or hub answered)."""
    return isinstance(_files.get((str(path), revision, "config.json")), str)


def model_config(path: str, revision: str = "main") -> dict:
    """config.json of a model (a directory or a hub id), as a dict."""
    return json.loads(read_file(path, revision, "config.json"))


def text_config(config: dict) -> dict:
    """The language model's part of a config (multimodal configs keep it under text_config)."""
    return config.get("text_config") or config


def arch_of(config: dict) -> str:
    return "seq2seq" if config.get("is_encoder_decoder") else "causal"


def _get(c: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if c.get(k) is not None:
            return c[k]
    return default


def param_counts(config: dict) -> Optional[tuple[int, int]]:
    """(all parameters, non-embedding parameters) from a config.json's shapes, or None when its architecture
    is not one this counts: decoder-only transformers (Llama, Qwen, Mistral, Gemma, OPT, GPT-2/NeoX ...; gated or
    plain MLP, grouped-query attention, mixture of experts counted in full), T5 and BART-style encoder-decoders.
    Norms and biases are counted where the plain-MLP families keep them, left out elsewhere (well under 0.1% at
    real sizes); tied input and output embeddings count once."""
    if config.get("num_parameters"):
        n = int(config["num_parameters"])
        return n, n  # a count of its own: no split to trust
    c = text_config(config)
    tied = c.get("tie_word_embeddings", config.get("tie_word_embeddings", True))
    vocab = c.get("vocab_size")
    if not vocab:
        return None
    if config.get("is_encoder_decoder"):
        return _seq2seq_counts(c, vocab, tied)
    hidden = _get(c, "hidden_size", "n_embd", "d_model")
    layers = _get(c, "num_hidden_layers", "n_layer", "num_layers")
    heads = _get(c, "num_attention_heads", "n_head", "num_heads")
    if not (hidden and layers and heads):
        return None
    head_dim = c.get("head_dim") or hidden // heads
    kv = c.get("num_key_value_heads") or (1 if c.get("multi_query") else heads)
    inter = _get(c, "intermediate_size", "ffn_dim", "n_inner", default=4 * hidden)
    mlp = (2 if c.get("model_type") in PLAIN_MLP else 3) * hidden * inter
    experts = _get(c, "num_local_experts", "num_experts", "n_routed_experts", default=1)
    attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    if c.get("model_type") in PLAIN_MLP:  # these keep biases on every linear layer, and biased layer norms
        attention += heads * head_dim + 2 * kv * head_dim + hidden
        mlp += inter + hidden + 4 * hidden
    body = layers * (attention + experts * mlp)
    embed_dim = c.get("word_embed_proj_dim") or hidden  # OPT-350m projects a smaller embedding
    if embed_dim != hidden:
        body += 2 * embed_dim * hidden
    emb = vocab * embed_dim * (1 if tied else 2)
    if c.get("model_type") in ("opt", "gpt2", "gpt_bigcode"):  # learned positions (OPT's table has 2 more rows)
        rows = _get(c, "max_position_embeddings", "n_positions", default=0) + (2 if c["model_type"] == "opt" else 0)
        emb += rows * hidden
    return body + emb, body


def _seq2seq_counts(c: dict, vocab: int, tied: bool) -> Optional[tuple[int, int]]:
    d = c.get("d_model")
    if not d:
        return None
    if "d_ff" in c:  # T5 family: d_model, d_ff, num_layers, num_decoder_layers, num_heads x d_kv
        inner = c.get("num_heads", 8) * c.get("d_kv", d // c.get("num_heads", 8))
        ff = (3 if str(c.get("feed_forward_proj", "")).startswith("gated") else 2) * d * c["d_ff"]
        enc, dec = c.get("num_layers", 6), c.get("num_decoder_layers") or c.get("num_layers", 6)
        body = enc * (4 * d * inner + ff) + dec * (8 * d * inner + ff)
        body += (2 * enc + 3 * dec + 2) * d + 2 * c.get("relative_attention_num_buckets", 32) * c.get("num_heads", 8)
        emb = vocab * d * (1 if tied else 2)
        return body + emb, body
    enc, dec = c.get("encoder_layers"), c.get("decoder_layers")  # BART family
    if not (enc and dec):
        return None
    body = enc * (4 * d * d + 2 * d * c.get("encoder_ffn_dim", 4 * d)) + \
        dec * (8 * d * d + 2 * d * c.get("decoder_ffn_dim", 4 * d))
    emb = vocab * d * (1 if tied else 2) + 2 * c.get("max_position_embeddings", 0) * d
    return body + emb, body


def resolve(key: str, model: Any) -> Any:
    """The value of model.<key> for `${hf:key}` (`model`: the model node, with path and revision)."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        path, revision = str(model.path), str(model.revision)
    except MissingMandatoryValue:
        raise ConfigError("model=hf needs model.path: a hub id (ORG/NAME, e.g. model.path=Qwen/Qwen2.5-0.5B-Instruct) "
                          "or a directory written by save_pretrained") from None
    if key == "name":
        return safe_name(path)
    if key == "source":
        return "local" if is_directory(path) else "hub"
    config = model_config(path, revision)
    if key == "arch":
        return arch_of(config)
    if key in ("params_b", "non_embedding_params_b"):
        counts = param_counts(config)
        if counts is None:
            return 0.0
        return round(counts[0 if key == "params_b" else 1] / 1e9, 4)
    raise Unavailable(f"${{hf:{key}}}: the hf resolver fills name, source, arch, params_b and "
                      "non_embedding_params_b, not {key}")


def register_resolvers() -> None:
    """Register `${hf:KEY}` (conf/model/hf.yaml) with OmegaConf; after persona_bench.config.register()."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("hf"):
        OmegaConf.register_new_resolver("hf", lambda key, *, _parent_: resolve(key, _parent_))


class _Template:
    """A stand-in tokenizer that has a chat template and nothing else: enough for inputs.prompts to test
    what the template does with a system turn, without loading the tokenizer."""

    def __init__(self, chat_template: str, special: dict):
        self.chat_template, self.special = chat_template, special

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[messages], chat_template=self.chat_template,
                                            add_generation_prompt=add_generation_prompt, **self.special)
        return rendered[0]


def chat_template(path: str, revision: str = "main") -> str:
    """How the persona will be placed, in words, from tokenizer_config.json and chat_template.jinja:
    'system turn', 'user turn (...)', 'plain text (no chat template)' or 'unknown (...)'."""
    try:
        tok = json.loads(read_file(path, revision, "tokenizer_config.json", required=False) or "{}")
        template = tok.get("chat_template") or read_file(path, revision, "chat_template.jinja", required=False)
    except (Unavailable, ValueError) as e:
        return f"unknown ({str(e)[:80]})"
    if isinstance(template, list):  # [{name, template}, ...]: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if not template:
        return "plain text (no chat template)"
    special = {k: (v.get("content") if isinstance(v, dict) else v) for k, v in tok.items()
               if k.endswith("_token") and isinstance(v, (str, dict))}
    probe = _Template(template, special)
    try:
        placement = resolve_placement(probe, "auto")
    except Exception as e:  # noqa: BLE001 - a template that needs more than this stand-in
        return f"unknown (the chat template did not render here: {type(e).__name__})"
    if placement == "system":
        extra = "; it writes a default system prompt when there is none (the control gets it unless " \
            "model.control_system=empty)" if adds_default_system(probe) else ""
        return f"system turn{extra}"
    return "user turn (the chat template takes no system turn: the persona is merged into the user's)"
