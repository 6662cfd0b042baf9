"""Bad input gets one clear error, early: `python run.py <bad input>` exits non-zero with one
message that names the bad value (and what would be valid), no traceback, before any weights
load, and leaves no results behind.

One table, one row per mistake. Exit code 2 is ours (run.py on a persona_bench UserError);
1 is Hydra's, for what it rejects while composing (an unknown option of a group, a key the
typed schema lacks, a value of the wrong type, override syntax). Rows marked SUB run the real
command in a subprocess; the others, checks that Hydra does not own, run the same path in this
process (Hydra's compose API, then run.runner.run with model loading replaced by a failure), because
each subprocess spends ~5 s importing torch. Every family of errors has at least one SUB row.
The subprocesses start together (as many at a time as there are cores, up to 8) when the first
row runs, and the in-process rows run meanwhile.
"""

from __future__ import annotations

import csv
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
from persona_bench.config.schema import RoleConfig, RoleSetConfig
from persona_bench.config.validate import validate
from persona_bench.inputs.roles import build_roles
from persona_bench.run import runner
from persona_bench.run import setup as run_setup

SUB, IN = "subprocess", "in-process"
RESULTS = ("predictions.parquet", "summary.json")
HYDRA_FILES = {".hydra", "run.log"}  # what Hydra itself writes to the run directory before the job starts
SMALL = "dataset.per_subject=1 role_set.names=[doctor]"  # keeps a job small, should a check fail to stop it


@dataclass
class Case:
    id: str
    args: str  # the command line after `python run.py`; @D is the directory of the test's files
    code: int  # 2: our UserError; 1: Hydra rejects the config while composing
    says: tuple[str, ...]  # fragments the output must contain
    how: str = IN


def case(id, args, code, says, how=IN, marks=()):
    says = (says,) if isinstance(says, str) else tuple(says)
    return pytest.param(Case(id, args, code, says, how), id=id, marks=marks)


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: device=cuda is valid here")

CASES = [
    # -- Hydra: an unknown option of a config group; it lists the available ones ------------------------------
    case("model-option", "model=nosuch", 1,
         ("Could not find 'model/nosuch'", "Available options in 'model'", "gemma3_270m"), SUB),
    # an entry of the template list: Hydra names it but lists no alternatives (its message for list entries)
    case("template-option", "template=[speaker,nosuch]", 1, "Could not load 'template/nosuch'", SUB),
    case("role_set-option", "role_set=nosuch", 1, ("Could not find 'role_set/nosuch'", "interpersonal"), SUB),
    case("dataset-option", "dataset=nosuch", 1, ("Could not find 'dataset/nosuch'", "mmlu_paper"), SUB),
    case("scoring-option", "scoring=nosuch", 1, ("Could not find 'scoring/nosuch'", "cloze"), SUB),
    case("tracking-option", "tracking=nosuch", 1, ("Could not find 'tracking/nosuch'", "wandb"), SUB),
    # -- Hydra: the typed schema rejects a misspelt key or a wrong type while composing -----------------------
    case("key-misspelt", "model.batch_token=5", 1, "Key 'batch_token' not in 'ModelConfig'", SUB),
    case("key-misspelt-dataset", "dataset.per_subjects=3", 1, "Key 'per_subjects' not in 'DatasetConfig'", SUB),
    case("wrong-type", "model.batch_tokens=lots", 1,
         "Value 'lots' of type 'str' could not be converted to Integer", SUB),
    case("role-file-misspelt-key", "role_set=badkey hydra.searchpath=[file://@D/conf]", 1,
         "Key 'categroy' not in 'RoleConfig'", SUB),
    # unquoted braces are Hydra's override syntax (a dict): quote the text, as the README shows
    case("template-unquoted-braces", "template=custom 'template.custom.text=You are {rol}.'", 1,
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
    case("report key", "report.enable=false", 1, "Key 'enable' not in 'ReportConfig'", SUB),
    # -- shards -----------------------------------------------------------------------------------------------
    case("shard-index-range", "shard.count=3 shard.index=3", 2,
         "shard.index=3 is out of range; valid: 0 to 2 (shard.count=3)", SUB),
    case("shard-index-negative", "shard.index=-1", 2, "shard.index=-1 is out of range; valid: 0 (one shard: shard.count=1)"),
    case("shard-count-zero", "shard.count=0", 2, "shard.count=0 must be a whole number of shards, 1 or more"),
    case("shard-count-type", "shard.count=2.5", 1, "Value '2.5' of type 'float' could not be converted to Integer", SUB),
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
    case("quantize-gguf", "model.quantization=4bit", 2,
         "model.quantization=4bit with a GGUF model (gemma3_270m): the GGUF is already quantised"),
    case("quantize-gguf-dry-run", "model.quantization=8bit dry_run=true", 2,
         "model.quantization=8bit with a GGUF model"),
    # -- the output directory ---------------------------------------------------------------------------------
    case("output-under-a-file", f"output_dir=@D/afile/out {SMALL}", 2, "output_dir=@D/afile/out cannot be created",
         SUB),
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
    with resources.files("persona_bench.resources").joinpath("mmlu_paper_sample.csv").open(encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["subject"] == "clinical_knowledge" and r["split"] == "train")
    (d / "sample.csv").write_text(f"subject,content_hash,split\n{row['subject']},{row['content_hash']},train\n")
    roles = d / "conf" / "role_set"
    roles.mkdir(parents=True)
    for name, role in [("badcat", "{name: pirate, category: buccaneer}"), ("noname", "{category: work}"),
                       ("badgender", "{name: pirate, gender: pirate}"), ("badkey", "{name: pirate, categroy: work}")]:
        (roles / f"{name}.yaml").write_text(f"name: mine\nroles:\n  - {role}\n")
    return d


def command(c: Case, d: Path, run_dir: Path) -> list[str]:
    args = shlex.split(c.args.replace("@D", str(d)))
    quiet = [] if any(a.startswith("tracking=") for a in args) else ["tracking=none"]  # the last override wins
    return [*quiet, *args, f"hydra.run.dir={run_dir}"]


def run_py(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY")}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.fixture(scope="module")
def launched(request, files, tmp_path_factory):
    """Start every selected SUB row's command at once (threads waiting on subprocesses); each row's
    test then waits for its own. Returns {id: future of (CompletedProcess, run directory)}."""
    rows = [item.callspec.params["c"] for item in request.session.items
            if item.module is request.module and "c" in getattr(getattr(item, "callspec", None), "params", {})]
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
        overrides = command(c, files, tmp_path / "r")[:-1]  # hydra.run.dir means nothing to compose
        monkeypatch.setattr(run_setup, "load_backend", no_weights)
        with pytest.raises(UserError) as e:  # run.py exits 2 on a UserError
            runner.run(compose_cfg(overrides, out=str(out)))
        output = str(e.value)
        assert not out.exists() or not any(out.iterdir()), f"left behind: {sorted(os.listdir(out))}"
    for fragment in says:
        assert fragment in output, output[-3000:]
    assert not [p for p in files.rglob("*") if p.name in RESULTS]


def test_role_without_a_name_in_process():
    """A role file's entry with no name (run.py's typed conversion stops it first; see the role-file-no-name row)."""
    cfg = compose_cfg(["role_set=paper", "tracking=none"])
    cfg.role_set.roles = [RoleConfig(category="work")] + cfg.role_set.roles
    validate(cfg)
    with pytest.raises(UserError, match=r"role_set paper, role 0: the name is empty; every role needs a name"):
        build_roles(cfg.role_set)
    with pytest.raises(UserError, match="has no roles"):
        build_roles(RoleSetConfig(name="mine"))
