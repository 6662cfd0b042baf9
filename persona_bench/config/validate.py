"""Value checks the schema's types cannot express (allowed choices, ranges, paths), run before
anything loads; each error names the bad value and the valid ones."""

from __future__ import annotations

from typing import Any

from persona_bench.config.errors import ConfigError, did_you_mean
from persona_bench.config.schema import (
    ARCHS,
    CLOZE_SCORES,
    CONTROL_SYSTEM,
    DATA_SOURCES,
    DECODINGS,
    DTYPES,
    FORMATS,
    GENERATE_BACKENDS,
    MODEL_SOURCES,
    PLACEMENTS,
    QUANTIZATIONS,
    SCORING_METHODS,
    TRACKING_BACKENDS,
    TRACKING_MODES,
    Config,
    GenerateConfig,
    ModelConfig,
)
from persona_bench.outputs import CONTROL


def _choice(where: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{where}={value!r} is not valid; valid values: {', '.join(map(str, valid))}")


def _positive(where: str, value: Any, what: str) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{where}={value} must be {what}")


def _check_keys(obj: Any, where: str = "") -> None:
    """Keys added with `+key=value` that the schema lacks: OmegaConf.to_object keeps them as plain
    attributes, so without this check a misspelt `+model.batch_token=5` would be ignored in silence."""
    import dataclasses

    if dataclasses.is_dataclass(obj):
        names = [f.name for f in dataclasses.fields(obj)]
        for key in vars(obj):
            if key not in names:
                group = f"keys of {where.rstrip('.')}" if where else "top-level keys"
                raise ConfigError(f"{where}{key} is not a config key{did_you_mean(key, names)}; "
                                  f"{group}: {', '.join(names)}")
        for name in names:
            _check_keys(getattr(obj, name), f"{where}{name}.")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_keys(value, f"{where}{key}.")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _check_keys(value, f"{where}{i}.")


def _check_template(name: str, text: str) -> None:
    import string

    if name == CONTROL:
        if text:
            raise ConfigError(f"template.control.text={text!r}: the control is the prompt without a persona, so "
                              "its text must be empty; put the sentence in a template of its own, e.g. "
                              "template.custom.text")
        return
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise ConfigError(f"template.{name}.text={text!r} is not a valid template ({e}); "
                          "placeholders are {role} and {a}, literal braces are written {{ and }}") from None
    for f in fields:
        if f not in ("role", "a"):
            hint = did_you_mean("{" + f + "}", ("{role}", "{a}")) if f and not f.isdigit() else ""
            raise ConfigError(f"template.{name}.text={text!r} has an unknown placeholder {{{f}}}{hint}; valid "
                              "placeholders: {role} (the role's name) and {a} (its article, a or an)")
    if "role" not in fields:
        raise ConfigError(f"template.{name}.text={text!r} has no {{role}} placeholder; e.g. 'You are {{a}} {{role}}.'")


def _check_shard(index: Any, count: Any) -> None:
    def whole(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if not whole(count) or count < 1:
        raise ConfigError(f"shard.count={count!r} must be a whole number of shards, 1 or more (1 = no sharding)")
    if not whole(index) or not 0 <= index < count:
        valid = "0 (one shard: shard.count=1)" if count == 1 else f"0 to {count - 1} (shard.count={count})"
        raise ConfigError(f"shard.index={index!r} is out of range; valid: {valid}")


def _check_generate(g: "GenerateConfig", fmt: str, m: "ModelConfig") -> None:
    if fmt == "cloze":
        raise ConfigError("scoring.format=cloze lists no options, so a generated answer has nothing to name; "
                          "scoring.method=generate needs scoring.format=paper (numbers 1-4) or mmlu (letters A-D)")
    if not isinstance(g.max_new_tokens, int) or g.max_new_tokens < 1:
        raise ConfigError(f"scoring.generate.max_new_tokens={g.max_new_tokens} must be a whole number of tokens, 1 or "
                          "more (the paper: 32)")
    if not g.repetition_penalty > 0:
        raise ConfigError(f"scoring.generate.repetition_penalty={g.repetition_penalty} must be positive (1.0 = off, "
                          "the paper: 1.1)")
    if g.decoding == "greedy":
        unused = [f"{k}={getattr(g, k)}" for k, off in (("temperature", 1.0), ("top_p", 1.0), ("top_k", 0))
                  if getattr(g, k) != off]
        if unused:
            raise ConfigError(f"scoring.generate.{', '.join(unused)} only applies to decoding=sampled; set "
                              "scoring.generate.decoding=sampled (or scoring=generate_paper), or leave it at its default")
    if not g.temperature > 0:
        raise ConfigError(f"scoring.generate.temperature={g.temperature} must be positive; for deterministic answers "
                          "use decoding=greedy")
    if not 0 < g.top_p <= 1:
        raise ConfigError(f"scoring.generate.top_p={g.top_p} must be in (0, 1]; 1.0 = off")
    if g.top_k < 0:
        raise ConfigError(f"scoring.generate.top_k={g.top_k} must be 0 (off) or a positive number of tokens")
    if g.backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("scoring.generate.backend=vllm needs vLLM, which is not installed (it pins its own torch and "
                              "transformers): pip install -r requirements-vllm.txt in a separate environment, or use "
                              "backend=hf")
        if m.source == "pypi_gguf" or m.quantization != "none":
            raise ConfigError(f"scoring.generate.backend=vllm loads hub or local checkpoints without bitsandbytes "
                              f"(model.source={m.source}, model.quantization={m.quantization}); use backend=hf")


def check_directory(where: str, path: str, alternative: str, writable: bool = False) -> None:
    """`path` is a directory, or can be made one: no part of it is a file; with `writable`, the directory
    (or its nearest existing parent, where it would be made) can be written to. Nothing is created."""
    import os
    from pathlib import Path

    p = Path(path).expanduser()
    for part in (p, *p.parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == p else f"lies under {part}, which is a file"
                raise ConfigError(f"{where}={path!r} {what}; give a directory, {alternative}")
            if writable and not os.access(part, os.W_OK | os.X_OK):
                what = "is not writable" if part == p else f"cannot be created: {part} is not writable"
                raise ConfigError(f"{where}={path!r} {what}; give a directory, {alternative}")
            return


# Config keys whose values name folders of the run directory (conf/hydra/default.yaml), and where.
PATH_NAMES = {
    "model.name": "outputs/<experiment_name>/<model.name>-<id>, multirun/<sweep_name>/<model.name>-<id>",
    "experiment_name": "outputs/<experiment_name>/",
    "sweep_name": "multirun/<sweep_name>/",
}


def path_names(cfg: Any) -> dict:
    """The values of PATH_NAMES in a typed Config or a composed DictConfig."""
    return {"model.name": cfg.model.name, "experiment_name": cfg.experiment_name, "sweep_name": cfg.sweep_name}


def check_path_names(names: dict) -> None:
    """Each value of PATH_NAMES ({key: value}; None: not set) is a plain folder name: with '/' or '\\' it
    would nest the run folder, with '..' move it (model.name=../../x: outside outputs/)."""
    import re

    for key, value in names.items():
        if value is None:
            continue
        text = str(value)
        if text.strip() and text != "." and not any(s in text for s in ("/", "\\", "..", "\0")):
            continue
        plain = re.sub(r"[/\\\0.]+", "_", text).strip("_ ") or "mine"
        raise ConfigError(f"{key}={text!r} is not a plain name: it names a folder of the run directory "
                          f"({PATH_NAMES[key]}), where '/', '\\' or '..' (or an empty name) would put the run "
                          f"folder elsewhere, even outside outputs/; use a plain name, e.g. {key}={plain}")


def validate(cfg: Config) -> None:
    """Check what the schema's types cannot, before anything loads; raise ConfigError naming the bad
    value and the valid ones. The model checks that need the machine (the device, bitsandbytes, the model's
    local files) follow in models.loading.preflight, which run.job.Job.prepare calls next."""
    _check_keys(cfg)
    check_path_names(path_names(cfg))
    m = cfg.model
    _choice("model.source", m.source, MODEL_SOURCES)
    _choice("model.arch", m.arch, ARCHS)
    _choice("model.dtype", m.dtype, DTYPES)
    _choice("model.quantization", m.quantization, QUANTIZATIONS)
    _choice("model.placement", m.placement, PLACEMENTS)
    _choice("model.control_system", m.control_system, CONTROL_SYSTEM)
    _choice("model.scoring", m.scoring, SCORING_METHODS[1:])
    if m.batch_tokens < 0:
        raise ConfigError(f"model.batch_tokens={m.batch_tokens} must be a positive number of tokens, or 0 (auto: "
                          "chosen from free GPU memory)")
    if m.trust_remote_code:
        import warnings

        warnings.warn(f"model.trust_remote_code is on: code from {m.path} will run on this machine")
    s = cfg.scoring
    _choice("scoring.method", s.method, SCORING_METHODS)
    _choice("scoring.format", s.format, FORMATS)
    _choice("scoring.cloze_score", s.cloze_score, CLOZE_SCORES)
    if not 0 < s.collapse_warning <= 1:
        raise ConfigError(f"scoring.collapse_warning={s.collapse_warning} must be a share of predictions in (0, 1]")
    if not 0 <= s.self_check <= 1:
        raise ConfigError(f"scoring.self_check={s.self_check} must be a share of the prompts in [0, 1] (0.02 = 2%; "
                          "0 = no numerical self-check)")
    if s.self_check_min < 0:
        raise ConfigError(f"scoring.self_check_min={s.self_check_min} must be a number of prompts, 0 or more")
    _choice("scoring.generate.decoding", s.generate.decoding, DECODINGS)
    _choice("scoring.generate.backend", s.generate.backend, GENERATE_BACKENDS)
    method, fmt = resolved_scoring(cfg)
    if method == "generate":
        _check_generate(s.generate, fmt, cfg.model)
        if s.generate.backend == "vllm" and cfg.device == "cpu":
            raise ConfigError("scoring.generate.backend=vllm runs on CUDA GPUs only (device=cpu); use backend=hf")
    if method == "letter" and fmt == "cloze":
        raise ConfigError(
            "scoring.format=cloze lists no options, so scoring.method=letter has no labels to score; "
            "use scoring=cloze, or scoring.format=mmlu|paper"
        )
    d = cfg.dataset
    _choice("dataset.source", d.source, DATA_SOURCES)
    for key in ("per_subject", "limit"):
        _positive(f"dataset.{key}", getattr(d, key), "a positive number or null")
    if d.split is not None:
        _choice("dataset.split", d.split, ("train", "val", "test"))
        if not d.sample:
            raise ConfigError(f"dataset.split={d.split} needs a sample with a split column (e.g. dataset=mmlu_paper); "
                              f"dataset {d.name} has no sample")
    if d.subjects is not None and not d.subjects:
        raise ConfigError("dataset.subjects=[] selects no subject; list some, e.g. [anatomy,virology], or null for all")
    if d.source in ("csv", "file") and not d.path:
        raise ConfigError(f"dataset.source={d.source} needs dataset.path (a folder for csv, a file for file)")
    if not cfg.template:
        raise ConfigError("template is empty; choose at least one, e.g. template=[speaker,audience] (the control is always added)")
    for name, t in cfg.template.items():
        _check_template(name, t.text)
    tracking = cfg.tracking
    _choice("tracking.backend", tracking.backend, TRACKING_BACKENDS)
    _choice("tracking.mode", tracking.mode, TRACKING_MODES)
    for key in ("probe_timeout_s", "init_timeout_s"):
        _positive(f"tracking.{key}", getattr(tracking, key), "a positive number of seconds")
    _positive("threads", cfg.threads, "a positive number of CPU threads, or null for torch's default")
    _positive("report.n_boot", cfg.report.n_boot, "a positive number of bootstrap resamples (2000 is usual)")
    if not 0 < cfg.report.equivalence_margin < 1:
        raise ConfigError(f"report.equivalence_margin={cfg.report.equivalence_margin} must be an accuracy difference "
                          "between 0 and 1 (0.01 = 1 point)")
    _check_shard(cfg.shard.index, cfg.shard.count)
    if cfg.cache_dir:
        check_directory("cache_dir", cfg.cache_dir, "or null for $PERSONA_BENCH_CACHE or ~/.cache/persona_bench")


def resolved_scoring(cfg: Config) -> tuple[str, str]:
    """(method, format) after resolving `auto` against the model's default."""
    method = cfg.model.scoring if cfg.scoring.method == "auto" else cfg.scoring.method
    fmt = cfg.scoring.format
    if fmt == "auto":
        fmt = {"cloze": "cloze", "generate": "paper"}.get(method, "mmlu")
    return method, fmt
