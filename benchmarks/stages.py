"""Time and peak resident memory of each stage of a real `python run.py`, from the outside.

    python benchmarks/stages.py                                  # the default command (the demo)
    python benchmarks/stages.py model.dtype=fp32                 # the same in fp32
    python benchmarks/stages.py dataset.per_subject=1 --json /tmp/stages.json

Runs run.py with the given overrides in a subprocess (in a fresh output folder unless one is given),
samples the resident memory of its whole process tree every --interval seconds from /proc, and cuts
the run into stages at the log lines that close them: the questions loaded, the model loaded, the
prompts built, scoring done, the self-pick written, persona perplexity written, the report written.
Prints one row per stage (seconds, peak resident memory) and the run's peak; Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (stage name, the log line that ends it); stages a run skips are left out.
STAGES = [
    ("start, config, questions", re.compile(r"persona_bench\.inputs\.dataset\]\[INFO\] - dataset ")),
    ("tracking start, model load", re.compile(r"persona_bench\.models\.loading\]\[INFO\] - loaded ")),
    ("prompts built", re.compile(r"persona_bench\.run\.runner\]\[INFO\] - \d+ prompts: ")),
    ("scoring", re.compile(r"persona_bench\.run\.runner\]\[INFO\] - scored \d+ prompts ")),
    ("numerical self-check", re.compile(r"persona_bench\.run\.self_check\]\[\w+\] - numerical self-check")),
    ("summary written", re.compile(r"persona_bench\.run\.runner\]\[INFO\] - control accuracy ")),
    ("results tracked, self-pick", re.compile(r"persona_bench\.run\.self_pick\]\[INFO\] - self-pick: ")),
    ("persona perplexity", re.compile(r"persona_bench\.run\.steps\]\[INFO\] - persona perplexity of ")),
    ("report", re.compile(r"persona_bench\.report\.write\]\[INFO\] - report of ")),
]


def tree_rss_kb(pid: int) -> int:
    """Resident memory of `pid` and all its descendants, in KiB (0 once it has exited)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) if "VmRSS" in status else 0
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError, AttributeError, PermissionError):
            continue
    return total


def cpu_name() -> str:
    """The CPU's model name, its bf16 units and core count, e.g. 'AMD EPYC (AVX512-BF16, 2 cores)'."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    kind = "AMX" if " amx_bf16" in info else "AVX512-BF16" if " avx512_bf16" in info else "AVX2 only"
    return f"{name} ({kind}, {os.cpu_count()} cores)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for run.py")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples (default 0.2)")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides.append(f"hydra.run.dir={tempfile.mkdtemp(prefix='stages-')}")
    cmd = [sys.executable, str(ROOT / "run.py"), *overrides]
    print("running:", " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marks: list[tuple[float, str]] = []
    tail: list[str] = []
    dtype: list[str] = []  # the dtype the model loaded in, from its log line

    def read():
        for line in proc.stdout:
            tail.append(line)
            del tail[:-40]
            for name, pattern in STAGES:
                if pattern.search(line):
                    marks.append((time.time(), name))
                    if name.endswith("model load"):
                        dtype.extend(re.findall(r"\b(bf16|fp16|fp32|4bit|8bit)\b", line)[:1])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    samples: list[tuple[float, int]] = []
    while proc.poll() is None:
        samples.append((time.time(), tree_rss_kb(proc.pid)))
        time.sleep(args.interval)
    reader.join()
    end = time.time()
    if proc.returncode != 0:
        print("".join(tail), file=sys.stderr)
        print(f"run.py exited with {proc.returncode}", file=sys.stderr)
        return 1
    bounds = [(t0, None)] + marks + [(end, "exit")]
    rows = []
    for (start, _), (stop, name) in zip(bounds, bounds[1:]):
        inside = [kb for t, kb in samples if start <= t <= stop]
        before = [kb for t, kb in samples if t < start][-1:]  # a stage shorter than the interval: the sample before
        peak = max(inside or before or [0])
        rows.append({"stage": name, "seconds": round(stop - start, 1), "peak_rss_gb": round(peak / 2**20, 2)})
    peak = max((kb for _, kb in samples), default=0)
    print(f"\n{cpu_name()}, {(dtype or ['dtype ?'])[0]}; python run.py {' '.join(args.overrides)}")
    print(f"{'stage':<30} {'seconds':>8} {'peak RSS (GB)':>14}")
    for r in rows:
        print(f"{r['stage']:<30} {r['seconds']:>8.1f} {r['peak_rss_gb']:>14.2f}")
    print(f"{'whole run':<30} {end - t0:>8.1f} {peak / 2**20:>14.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "dtype": (dtype or [None])[0], "overrides": args.overrides,
                                         "stages": rows,
                                         "seconds": round(end - t0, 1), "peak_rss_gb": round(peak / 2**20, 2)},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
