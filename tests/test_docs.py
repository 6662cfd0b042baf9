"""The README and docs/ show commands that work as written; nothing is run.

- Every `python run.py ...` of a fenced code block composes: `python run.py ARGS --cfg job` in a subprocess
  (Hydra prints the composed config and exits) must exit 0, and the printed config must pass the checks run.py
  makes before loading anything (config.validate, the roles and templates). Hydra refuses `--cfg` with `-m`: a
  sweep's first job goes through run.py, and each other job is checked as that job's config with its swept
  values set (a group option must be a file of its group). `VAR=value python run.py` passes VAR to the command;
  `docker run ... persona-bench ARGS` is `python run.py ARGS`.
- Every `python -m persona_bench.X` names a runnable module; every repository path named exists.
- Every relative link, and its #anchor, resolves; the README is short and its folder map names every module.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from helpers import CONF, ROOT
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from persona_bench.config import ConfigError, validate
from persona_bench.config.schema import Config, RoleConfig
from persona_bench.inputs.roles import build_roles, build_templates, personas
from persona_bench.models import hub

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
README_MAX_LINES = 120  # the README is the front door; the rest lives in docs/
MADE_BY_YOU = {"conf/local/default.yaml"}  # paths the docs tell you to create
ENV_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
RUN_PY = re.compile(r"\bpython3?\s+run\.py\b|\bdocker run\b")
IMAGE = "persona-bench"  # the image name the docs build (docker build -t persona-bench)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_lines(path: Path):
    """(line number, line) of each fenced code block's lines, continuation lines (`\\`) joined."""
    inside, pending, start = False, "", 0
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        if not pending:
            start = i
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def run_py_command(line: str):
    """(environment, run.py arguments) of a shell line that runs run.py, else None."""
    words = shlex.split(line, comments=True)
    env = {}
    while words and ENV_WORD.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if len(words) >= 2 and re.fullmatch(r"(\S*/)?python3?", words[0]) and words[1] == "run.py":
        return env, words[2:]
    if words[:2] == ["docker", "run"] and IMAGE in words:
        return env, words[words.index(IMAGE) + 1:]
    return None


def commands():
    """Every run.py command shown in a fenced code block of the docs."""
    found = []
    for path in DOCS:
        for n, line in code_lines(path):
            if not RUN_PY.search(line) or line.lstrip().startswith("docker build"):
                continue
            cmd = run_py_command(line)
            assert cmd is not None, f"{rel(path)}:{n} looks like a run.py command but does not parse: {line}"
            found.append(pytest.param(*cmd, id=f"{rel(path)}:{n}"))
    return found


def expand(args: list[str]) -> tuple[tuple[str, ...], list[list[str]]]:
    """(the run.py arguments that print the command's config, the overrides of a sweep's jobs). Hydra refuses
    --cfg with -m, so a sweep's first job (as Hydra's basic sweeper makes it) goes through run.py; every other
    job is that one with one or more swept values changed (other_jobs)."""
    if "-m" not in args and "--multirun" not in args:
        return (tuple(args) if {"--cfg", "-c"} & set(args) else (*args, "--cfg", "job")), []
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    assert not [a for a in overrides if a.startswith("-")], f"Hydra flags in a sweep: {args}"
    every = [job for batch in BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
             for job in batch]
    return (*every[0], "--cfg", "job"), every


# The environment variables the configs read (${oc.env:NAME}); the others a command sets (HF_TOKEN=...) do not
# change what it composes.
CONFIG_ENV = set(re.findall(r"oc\.env:(\w+)", "".join(p.read_text() for p in CONF.rglob("*.yaml"))))


def config_env(env: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items() if k in CONFIG_ENV))


def hermetic_env(extra: dict) -> dict:
    """This environment without the variables the configs read, plus the command's own."""
    return {**{k: v for k, v in os.environ.items() if k not in CONFIG_ENV}, **extra}


@lru_cache(maxsize=None)
def _printed() -> dict:
    """Run every distinct command's `--cfg` form once, one per CPU at a time: {(env, args): CompletedProcess}."""
    todo = set()
    for p in commands():
        try:
            todo.add((config_env(p.values[0]), expand(p.values[1])[0]))
        except Exception:  # noqa: BLE001 - the command's own test reports it
            pass

    def one(key):
        env, args = key
        return key, subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=hermetic_env(dict(env)),
                                   capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(pool.map(one, sorted(todo)))


def typed(raw: dict) -> Config:
    """A printed job config typed as run.py types it (output_dir as Hydra would set it). The role catalogue
    goes around OmegaConf, which would take most of a second to type its 162 roles."""
    raw = copy.deepcopy(raw)
    offline_hf(raw["model"])
    roles = raw["role_set"].pop("roles")
    raw["output_dir"] = "/tmp/persona-bench-test-docs"
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), raw))
    cfg.role_set.roles = [RoleConfig(**r) for r in roles]
    return cfg


def offline_hf(model: dict) -> None:
    """model=hf (conf/model/hf.yaml) reads a hub id's config.json, which cannot be fetched here: its `${hf:...}`
    values get stand-ins (name and source as the resolver makes them; arch causal, size unknown). Tested with
    a served config.json in tests/test_hf_model.py."""
    if Path(str(model.get("path"))).expanduser().is_dir():
        return
    stand_in = {"name": hub.safe_name(model["path"]), "source": "hub", "arch": "causal", "params_b": 0.0,
                "non_embedding_params_b": 0.0}
    for key, value in model.items():
        if isinstance(value, str) and value.startswith("${hf:"):
            model[key] = stand_in[key]


def check_values(cfg: Config) -> None:
    """What run.py checks before loading anything: the values, the roles and templates."""
    if cfg.scoring.generate.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="vLLM, which is not installed"):
            validate(cfg)
        cfg.scoring.generate.backend = "hf"
    validate(cfg)
    assert personas(build_roles(cfg.role_set), build_templates(cfg.template))


def other_jobs(first: dict, jobs: list[list[str]]):
    """Each further job of a sweep as a printed config: the first job's, with the values that differ set. A group
    option must be a file of its group (tests/test_configs.py composes every one of them)."""
    parser = OverridesParser.create()
    roles = first["role_set"]["roles"]
    rest = {**first, "role_set": {k: v for k, v in first["role_set"].items() if k != "roles"}}
    for job in jobs[1:]:
        cfg = OmegaConf.create(rest)
        for changed in (b for a, b in zip(jobs[0], job) if a != b):
            o = parser.parse_override(changed)
            if (CONF / o.key_or_group).is_dir():
                for option in o.value() if isinstance(o.value(), list) else [o.value()]:
                    assert (CONF / o.key_or_group / f"{option}.yaml").is_file(), f"no option {changed}"
            elif not o.key_or_group.startswith("hydra."):  # Hydra's own keys are not in the job's config
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        raw = OmegaConf.to_container(cfg)
        raw["role_set"]["roles"] = roles
        yield job, raw


@pytest.mark.parametrize("env,args", commands())
def test_run_py_command_composes(env, args):
    printed, jobs = expand(args)
    res = _printed()[(config_env(env), printed)]
    shown = " ".join(shlex.quote(a) for a in printed)
    assert res.returncode == 0, f"python run.py {shown} exited {res.returncode}:\n{res.stderr[-3000:]}"
    if printed[-2:] != ("--cfg", "job"):
        return  # --cfg hydra / all with -p: a part of Hydra's config, which Hydra checked
    first = yaml.load(res.stdout, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    check_values(typed(first))
    for job, raw in other_jobs(first, jobs):
        try:
            check_values(typed(raw))
        except Exception as e:
            raise AssertionError(f"job {job} of the sweep: {e}") from e


def test_ci_runs_the_readmes_test_command():
    """.ci/run ends with the README's test command, exactly (the command a user runs is the one CI runs)."""
    readme = [line.split("#")[0].strip() for line in README.read_text().splitlines()]
    (command,) = [line for line in readme if line.startswith("python -m pytest")]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == command


def test_docs_show_the_essential_commands():
    shown = {" ".join(p.values[1]) for p in commands()}
    assert "" in shown, "the demo: python run.py"
    assert any("-m" in s.split() and "experiment=paper" in s and "dry_run=true" in s for s in shown)
    readme = README.read_text()
    for line in ("pip install -r requirements.txt", "python -m pytest", '-m "not slow"'):
        assert line in readme


def doc_text() -> str:
    return "\n".join(p.read_text() for p in DOCS)


@pytest.mark.parametrize("module", sorted(set(re.findall(r"\bpython3? -m (persona_bench[\w.]*)", doc_text()))))
def test_python_m_module_exists_and_runs(module):
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"python -m {module}: no such module"
    if spec.submodule_search_locations:  # a package runs its __main__
        mains = [Path(d) / "__main__.py" for d in spec.submodule_search_locations]
        assert any(m.is_file() for m in mains), f"python -m {module}: the package has no __main__.py"
    else:
        assert 'if __name__ == "__main__"' in Path(spec.origin).read_text(), f"{module} has no main block"


PATH = re.compile(r"(?<![\w./-])((?:persona_bench|conf|benchmarks|tools|tests|docker|docs)/[\w./-]*)")


@pytest.mark.parametrize("path", sorted({m.rstrip(".") for m in PATH.findall(doc_text())} - MADE_BY_YOU))
def test_named_path_exists(path):
    assert (ROOT / path).exists(), f"the docs name {path}, which does not exist"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    inside, out = False, set()
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


LINKS = [(doc, target) for doc in DOCS for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text())
         if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("doc,target", LINKS, ids=[f"{rel(d)}->{t}" for d, t in LINKS])
def test_relative_link_resolves(doc, target):
    file, _, anchor = target.partition("#")
    dest = (doc.parent / file).resolve() if file else doc
    assert dest.exists(), f"{rel(doc)} links to {target}: no such file"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{rel(doc)} links to {target}: no heading with that anchor"


def test_readme_is_short_and_maps_every_module():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "the README is the front door: move details to docs/"
    block = text.split("persona_bench/\n", 1)[1].split("```", 1)[0]
    named, folder = set(), ""
    for line in block.splitlines():
        m = re.match(r"  (\w+)/", line)
        if m:
            folder = m.group(1)
        elif not line.startswith("    "):
            folder = ""
        named |= {f"{folder}/{name}.py" if folder else f"{name}.py" for name in re.findall(r"\b(\w+)\.py\b", line)}
    package = ROOT / "persona_bench"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py") and "resources" not in p.parts}
    assert modules <= named, f"modules missing from the README's folder map: {sorted(modules - named)}"
    assert {n for n in named if not (package / n).exists()} == set(), "the folder map names modules that do not exist"
