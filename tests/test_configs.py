"""Every config composes; the schema rejects bad keys and types while composing."""

import pytest
from helpers import CONF, compose_cfg
from hydra.errors import ConfigCompositionException

from persona_bench.config.errors import ConfigError
from persona_bench.config.validate import resolved_scoring, validate
from persona_bench.inputs.roles import build_roles, build_templates, personas

GROUPS = ["model", "template", "role_set", "dataset", "scoring", "prompt_format", "experiment", "debug"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_yaml_composes_and_validates(group, option, tmp_path):
    over = [f"{group}=[{option}]" if group == "template" else f"{group}={option}"]
    if (group, option) == ("model", "hf"):  # any model by its path: a directory with a config.json will do
        (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, '
                                              '"num_attention_heads": 4, "vocab_size": 800}')
        over.append(f"model.path={tmp_path}")
    if (group, option) == ("template", "custom"):
        over.append('template.custom.text="Pretend you are {a} {role}."')
    if (group, option) == ("dataset", "file"):
        over.append("dataset.path=/nonexistent.csv")
    if (group, option) == ("prompt_format", "cloze"):
        over.append("scoring=cloze")  # cloze lists no options: only cloze scoring reads it
    cfg = compose_cfg(over)
    validate(cfg)
    assert build_roles(cfg.role_set)


def test_default_is_the_demo():
    cfg = compose_cfg()
    assert cfg.experiment_name == "demo"
    assert cfg.model.name == "gemma3_270m" and cfg.model.source == "pypi_gguf"
    assert resolved_scoring(cfg) == ("cloze", "cloze")
    roles = build_roles(cfg.role_set)
    assert len(roles) == 8 and {r.category for r in roles} >= {"work", "family", "social", "ai", "occupation"}
    assert [t.name for t in build_templates(cfg.template)] == ["control", "speaker", "audience"]
    assert cfg.dataset.per_subject == 8


def test_paper_experiment_pins_the_study():
    cfg = compose_cfg(["experiment=paper", "model=llama2"])
    roles = build_roles(cfg.role_set)
    templates = build_templates(cfg.template)
    assert len(roles) == 162
    assert [t.name for t in templates] == ["control", "speaker", "audience", "imagine_speaker", "imagine_audience"]
    assert len(personas(roles, templates)) == 1 + 4 * 162
    assert cfg.dataset.per_subject is None and cfg.dataset.dedupe
    assert resolved_scoring(cfg) == ("letter", "mmlu")


def test_the_paper_experiment_keeps_all_2457_sample_rows_on_request():
    """experiment=paper scores the 2,410 unique questions; dataset.dedupe=false every row the paper averaged over
    (its 47 repeats included, each its own question: docs/paper-mode.md). Another job, another id."""
    from persona_bench.config.job_id import config_id

    rows = compose_cfg(["experiment=paper", "model=flan", "dataset.dedupe=false"])
    assert rows.dataset.sample == "mmlu_paper" and not rows.dataset.dedupe
    assert config_id(rows) != config_id(compose_cfg(["experiment=paper", "model=flan"]))


@pytest.mark.parametrize("fmt", ["paper_v1", "paper_v2", "paper_adapted"])
def test_the_studys_prompt_formats_compose(fmt):
    for scoring in ("generate", "letter"):
        cfg = compose_cfg([f"scoring={scoring}", f"prompt_format={fmt}"])
        validate(cfg)
        assert resolved_scoring(cfg) == (scoring, fmt)


def test_command_line_groups_override_the_experiment():
    cfg = compose_cfg(["role_set=ai", "dataset.per_subject=2"])
    assert cfg.role_set.name == "ai" and cfg.dataset.per_subject == 2


def test_misspelled_key_fails_while_composing():
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg(["model.batch_tokenz=10"])
    assert "batch_tokenz" in str(e.value.__cause__ or e.value)


def test_wrong_type_fails_while_composing():
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["model.batch_tokens=lots"])


def test_unknown_group_option_names_the_choices():
    with pytest.raises(Exception) as e:
        compose_cfg(["model=gpt5"])
    assert "gpt5" in str(e.value) and "flan" in str(e.value)


@pytest.mark.parametrize("override,fragment", [
    ("model.batch_tokens=-1", "batch_tokens=-1"),
    ("model.dtype=fp8", "model.dtype='fp8'"),
    ("model.quantization=3bit", "3bit"),
    ("scoring.method=guess", "scoring.method='guess'"),
    ("scoring.generate.decoding=beam", "scoring.generate.decoding='beam'"),
    ("scoring.generate.backend=tgi", "scoring.generate.backend='tgi'"),
    ("dataset.per_subject=0", "per_subject=0"),
    ("dataset.split=dev", "dev"),
    ("template=[custom]", None),
])
def test_bad_values_raise_config_error_naming_them(override, fragment):
    if override == "template=[custom]":
        cfg = compose_cfg([override, 'template.custom.text="You are great."'])
        fragment = "no {role}"
    else:
        cfg = compose_cfg([override])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert fragment in str(e.value)


@pytest.mark.parametrize("overrides,fragment", [
    (["scoring=generate", "scoring.format=cloze"], "needs scoring.format=paper"),
    (["scoring=generate", "prompt_format=cloze"], "needs scoring.format=paper"),
    (["scoring=generate", "scoring.generate.max_new_tokens=0"], "max_new_tokens=0"),
    (["scoring=generate", "scoring.generate.temperature=0.7"], "temperature=0.7 only applies to decoding=sampled"),
    (["scoring=generate_paper", "scoring.generate.temperature=0"], "temperature=0.0 must be positive"),
    (["scoring=generate_paper", "scoring.generate.top_p=1.5"], "top_p=1.5"),
    (["scoring=generate_paper", "scoring.generate.top_k=-1"], "top_k=-1"),
    (["scoring=generate", "scoring.generate.repetition_penalty=0"], "repetition_penalty=0.0"),
    (["scoring=generate", "scoring.generate.backend=vllm"], "requirements-vllm.txt"),
])
def test_bad_generation_settings_fail_before_loading(overrides, fragment):
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert fragment in str(e.value)


def test_generate_scorings_compose_with_the_paper_settings():
    greedy = compose_cfg(["scoring=generate"])
    assert resolved_scoring(greedy) == ("generate", "paper")
    assert greedy.scoring.generate.decoding == "greedy" and greedy.scoring.generate.max_new_tokens == 32
    paper = compose_cfg(["scoring=generate_paper"]).scoring.generate
    assert (paper.decoding, paper.repetition_penalty, paper.max_new_tokens, paper.temperature) == ("sampled", 1.1, 32, 1.0)
    assert compose_cfg(["scoring=letter", "prompt_format=paper"]).scoring.format == "paper"
    assert compose_cfg(["scoring=generate", "prompt_format=mmlu"]).scoring.format == "mmlu"


def test_generation_settings_are_part_of_a_generate_jobs_identity_only():
    from persona_bench.config.job_id import config_id

    base = compose_cfg()
    assert config_id(base) == config_id(compose_cfg(["scoring.generate.max_new_tokens=8"]))  # cloze: unused
    gen = compose_cfg(["scoring=generate"])
    assert config_id(gen) != config_id(compose_cfg(["scoring=generate", "scoring.generate.max_new_tokens=8"]))
    assert config_id(gen) != config_id(compose_cfg(["scoring=generate_paper"]))


def test_letter_scoring_with_cloze_format_is_rejected():
    cfg = compose_cfg(["scoring=letter", "scoring.format=cloze"])
    with pytest.raises(ConfigError, match="lists no options"):
        validate(cfg)


def test_custom_template_from_the_command_line():
    cfg = compose_cfg(["template=[speaker,custom]", 'template.custom.text="Pretend you are {a} {role}."'])
    ts = build_templates(cfg.template)
    roles = build_roles(cfg.role_set)
    doctor = next(r for r in roles if r.name == "doctor")
    assert ts[-1].render(doctor) == "Pretend you are a doctor."
