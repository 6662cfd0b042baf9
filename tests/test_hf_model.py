"""Any Hugging Face model by its id (conf/model/hf.yaml, persona_bench/models/hub.py): end to end on tiny local
models, the dry-run plan from a hub id's config.json alone, parameter counts against the presets' documented
sizes, the one-line error for an id that cannot be read; the short --help page and the --config-dir example."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import huggingface_hub
import pandas as pd
import pytest
from helpers import CONF, ROOT, SMALL, compose_cfg
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError
from hydra import compose, initialize_config_dir

from persona_bench.config.errors import UserError
from persona_bench.models import hub
from persona_bench.models.devices import cpu_has_bf16
from persona_bench.outputs import CONTROL
from persona_bench.run.runner import run

QWEN_05B = {  # Qwen/Qwen2.5-0.5B-Instruct's config.json, the keys that decide its size (494M, 358M non-embedding)
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
QWEN_TEMPLATE = (  # Qwen2.5's chat template, shortened: a default system prompt when the messages have none
    "{%- if messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{%- else %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "{%- endif %}{%- for m in messages %}{%- if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{%- endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- endif %}")
FLAN_T5_XXL = {"model_type": "t5", "is_encoder_decoder": True, "d_model": 4096, "d_ff": 10240, "d_kv": 64,
               "num_heads": 64, "num_layers": 24, "num_decoder_layers": 24, "vocab_size": 32128,
               "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False}
OPT_IML_13B = {"model_type": "opt", "hidden_size": 2048, "ffn_dim": 8192, "num_hidden_layers": 24,
               "num_attention_heads": 32, "vocab_size": 50272, "max_position_embeddings": 2048,
               "word_embed_proj_dim": 2048, "tie_word_embeddings": True}


@pytest.fixture(autouse=True)
def fresh_reads():
    """Every test reads model files anew (models.hub keeps what it read for the process)."""
    hub._files.clear()
    yield
    hub._files.clear()


@pytest.fixture
def served(monkeypatch, tmp_path):
    """A hub that serves the files written into the returned folder, and records every request; any other
    file is missing from the repository, as the hub says it (a 404 for that file)."""
    files, asked = tmp_path / "hub", []
    files.mkdir()

    def download(repo, filename, revision="main", local_files_only=False, **kw):
        asked.append((repo, filename))
        if not (files / filename).is_file():
            raise RemoteEntryNotFoundError(f"404: {filename}", response=None)
        return str(files / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return files, asked


@pytest.mark.parametrize("arch,template,placement", [("llama", "system", "system"), ("t5", None, "plain")])
def test_any_model_by_its_path_runs_end_to_end(tiny_model_dir, tmp_path, arch, template, placement):
    """model=hf model.path=DIR with nothing else: name, source, arch and size from the model's own files."""
    d = tiny_model_dir(arch, template)
    cfg = compose_cfg(["model=hf", f"model.path={d}", "model.dtype=fp32", "scoring.self_check=0", *SMALL],
                      out=str(tmp_path / "out"))
    assert (cfg.model.name, cfg.model.source) == (d.name, "local")
    assert cfg.model.arch == ("seq2seq" if arch == "t5" else "causal")
    summary = run(cfg)
    df = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert len(df) == 6 * 5 and df["pred"].notna().all()  # 6 questions x (control + 2 roles x 2 templates)
    assert set(df["placement"]) == {placement}
    assert summary["accuracy"]["control"] == pytest.approx(df[df["template"] == CONTROL]["correct"].mean(), abs=1e-6)


def test_counted_size_matches_the_loaded_model_and_the_presets(tiny_model_dir):
    """Counts from config.json alone: within 1% of the loaded tiny models, and within 0.5% of the sizes the presets
    document for FLAN-T5-XXL, Llama-3-8B and OPT-IML-Max-1.3B."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    for arch, auto in (("llama", AutoModelForCausalLM), ("opt", AutoModelForCausalLM), ("t5", AutoModelForSeq2SeqLM)):
        d = tiny_model_dir(arch)
        loaded = sum(p.numel() for p in auto.from_pretrained(d).parameters())
        counted, _ = hub.param_counts(hub.model_config(str(d)))
        assert abs(counted - loaded) / loaded < 0.01, (arch, counted, loaded)
    for preset, config in (("flan", FLAN_T5_XXL), ("llama3", LLAMA3_8B), ("opt", OPT_IML_13B)):
        want = compose_cfg([f"model={preset}"]).model
        total, body = hub.param_counts(config)
        assert total / 1e9 == pytest.approx(want.params_b, rel=0.005), preset
        assert body / 1e9 == pytest.approx(want.non_embedding_params_b, rel=0.005), preset


def test_plan_of_a_hub_id_reads_its_config_json_alone(served, tmp_path, capsys):
    """A 0.5B model is planned as 0.5B (not as another preset's 8B), its run folder named from the id, its chat
    template's placement said, from config.json and tokenizer_config.json: nothing else is fetched."""
    files, asked = served
    (files / "config.json").write_text(json.dumps(QWEN_05B))
    (files / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN_TEMPLATE, "eos_token": "<|im_end|>"}))
    cfg = compose_cfg(["model=hf", "model.path=Qwen/Qwen2.5-0.5B-Instruct", "dry_run=true", *SMALL],
                      out=str(tmp_path / "out"))
    assert (cfg.model.name, cfg.model.source, cfg.model.arch) == ("Qwen2.5-0.5B-Instruct", "hub", "causal")
    assert (cfg.model.params_b, cfg.model.non_embedding_params_b) == (0.494, 0.3578)
    plan = run(cfg)["dry_run"]
    # dtype=auto: bf16 on a CPU with bf16 units, fp32 on an AVX2-only one (models.devices.resolve_dtype)
    assert plan["dtype"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert plan["params_b"] == 0.494 and plan["weight_gib"] == round(0.494e9 * {"bf16": 2, "fp32": 4}[plan["dtype"]] / 2**30, 2)
    assert plan["chat_template"].startswith("system turn; it writes a default system prompt")
    assert "494M parameters" in capsys.readouterr().out
    assert {f for _, f in asked} <= {"config.json", "tokenizer_config.json", "chat_template.jinja"}
    assert not (tmp_path / "out").exists()  # a plan writes nothing


def test_run_folder_is_named_from_the_id(served):
    files, _ = served
    (files / "config.json").write_text(json.dumps(QWEN_05B))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["model=hf", "model.path=Qwen/Qwen2.5-0.5B-Instruct"],
                      return_hydra_config=True)
    assert re.fullmatch(r"outputs/demo/Qwen2\.5-0\.5B-Instruct-[0-9a-f]{8}", cfg.hydra.run.dir)
    assert hub.safe_name("/data/my models/fine tune v2/") == "fine_tune_v2"


def user_error(overrides: list[str]) -> str:
    """The message of the UserError that composing `overrides` raises (OmegaConf wraps a resolver's error)."""
    with pytest.raises(Exception) as e:
        compose_cfg(overrides)
    cause = e.value
    while cause is not None and not isinstance(cause, UserError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None, e.value
    return str(cause)


def test_an_id_that_cannot_be_read_is_one_clear_line(monkeypatch):
    def offline(repo, filename, **kw):
        raise LocalEntryNotFoundError("cannot reach huggingface.co")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    message = user_error(["model=hf", "model.path=nobody/no-such-model"])
    assert "\n" not in message and message.startswith("model.path='nobody/no-such-model' (revision main)")
    for hint in ("network", "HF_TOKEN", "spelling", "local directory"):
        assert hint in message
    assert "pip install" not in message
    assert user_error(["model=hf"]).startswith("model=hf needs model.path: a hub id (ORG/NAME")


def test_help_is_one_page_and_hydra_help_still_works():
    """--help: our own page (groups and their options, common overrides, where to read more), not the whole
    config; --hydra-help: Hydra's."""
    def run_py(flag):
        return subprocess.run([sys.executable, "run.py", flag], cwd=ROOT, capture_output=True, text=True, timeout=120)

    page = run_py("--help")
    assert page.returncode == 0 and len(page.stdout.splitlines()) < 60
    for shown in ("model: flan, gemma3_270m, hf,", "model=hf model.path=ORG/NAME", "experiment=quick", "dry_run=true",
                  "-m model=", "--config-dir", "docs/"):
        assert shown in page.stdout
    hydra = run_py("--hydra-help")
    assert hydra.returncode == 0 and "--config-dir" in hydra.stdout and "== Flags ==" in hydra.stdout


def test_the_config_dir_example_is_the_documented_one_and_composes():
    """docs/own-configs.md shows the files of docs/examples/my-configs; with them on the search path (what
    --config-dir does), the example's options compose (tests/test_docs.py runs the documented command too)."""
    doc = (ROOT / "docs" / "own-configs.md").read_text()
    example = ROOT / "docs" / "examples" / "my-configs"
    for f in ("model/mymodel.yaml", "role_set/myroles.yaml", "template/pretend.yaml"):
        assert f"```yaml\n{(example / f).read_text()}```" in doc, f
    cfg = compose_cfg([f"hydra.searchpath=[file://{example}]", "model=mymodel", "role_set=myroles",
                       "template=[speaker,pretend]"])
    assert cfg.model.name == "mymodel" and [r.name for r in cfg.role_set.roles] == ["pirate", "astronaut", "grandmother"]
    assert cfg.template["pretend"].text == "Pretend you are {a} {role}."
