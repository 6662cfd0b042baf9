"""The report at the paper's scale, looked at as a person would: three synthetic models x 162 roles x the
paper's four templates (648 personas and the control), rendered, opened in headless Chromium 1,400 px wide,
and photographed section by section into docs/report/*.png (shown in docs/report.md).

    python tools/report_screenshots.py                          # the paper's size: 2,410 questions, 2,000 resamples
    python tools/report_screenshots.py --questions 300 --n-boot 200 --no-similarity --out /tmp/shots   # a quick look

Options: --questions (default 2410), --n-boot (default 2000), --no-similarity (skip MiniLM), --out (the
screenshots' folder, default docs/report), --keep (the folder for the runs and the report, default a
temporary one), --report-only (report the runs already under --keep again), --max-height (px per shot). Needs Debian's chromium and chromium-driver, and selenium (requirements.txt).

The models differ by their planted effects (persona_bench.analysis.synthetic): "flan" has a speaker
penalty, an audience bonus and a doctor effect; "llama2" a female-role bonus and a subject effect;
"opt" nothing planted but noise per persona. Each screenshot is one section (an h2 or h3 heading up to
the next), cut at --max-height px and stored as a 256-colour PNG to keep it small.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image

from persona_bench.analysis.synthetic import PlantedEffects, make_predictions, roles_frame
from persona_bench.report import Options, write_report

ROOT = Path(__file__).resolve().parents[1]  # the checkout: conf/ holds the paper's role set
PAPER = ROOT / "conf" / "role_set" / "paper.yaml"
SAMPLE = ROOT / "persona_bench" / "resources" / "mmlu_paper_sample.csv"  # the paper's questions (subjects only)
TEMPLATES = {"control": "", "speaker": "You are {a} {role}.", "audience": "You are talking to {a} {role}.",
             "imagine_speaker": "Imagine you are {a} {role}.",
             "imagine_audience": "Imagine you are talking to {a} {role}."}
MODELS = {  # name -> (planted effects, seed)
    "flan": (PlantedEffects(template={"speaker": -0.02, "audience": 0.02, "imagine_speaker": -0.01},
                            role={"doctor": 0.06, "janitor": -0.05}, persona_sd=0.01), 1),
    "llama2": (PlantedEffects(template={}, gender={"female": 0.02}, role={"mathematician": 0.05},
                              subject={"professional_law": -0.06, "high_school_biology": 0.05}, persona_sd=0.01), 2),
    "opt": (PlantedEffects(template={}, gender={}, role={}, persona_sd=0.015), 3),
}
WIDTH = 1400  # the window's width in px


def build_runs(root: Path, n_questions: int) -> list[Path]:
    roles, domains = roles_frame(PAPER)
    facts = yaml.safe_load(PAPER.read_text())
    sample = pd.read_csv(SAMPLE, keep_default_na=False)
    subjects = tuple(sorted(sample["subject"].unique()))  # the paper's 26 subjects
    runs = []
    for model, (effects, seed) in MODELS.items():
        df, _ = make_predictions(roles, n_questions=n_questions, templates=tuple(t for t in TEMPLATES if t != "control"),
                                 effects=effects, domains=domains, seed=seed, model=model, subjects=subjects,
                                 question_seed=0)  # the same questions for the three models
        run = root / f"{model}-0000000{seed}"
        run.mkdir(parents=True, exist_ok=True)
        df.to_parquet(run / "predictions.parquet")
        summary = {"model": {"model": model, "path": f"synthetic/{model}", "revision": "main", "dtype": "bf16",
                             "quantization": "none", "device": "cuda"},
                   "config_id": f"0000000{seed}", "experiment": "paper", "role_set": "paper", "templates": TEMPLATES,
                   "dataset": {"name": "mmlu_paper (synthetic)", "n_questions": n_questions, "data_hash": "synthetic"},
                   "placement": "system", "scoring": {"method": "letter", "format": "mmlu"}, "n_prompts": len(df)}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "job.json").write_text(json.dumps({"config_id": summary["config_id"], "identity": {"role_set": facts}}))
        runs.append(run)
        print(f"{model}: {len(df):,} prompts", flush=True)
    return runs


SECTIONS_JS = """
const heads = Array.from(document.querySelectorAll('h1, h2, h3'));
const out = [];
for (let i = 0; i < heads.length; i++) {
  const top = heads[i].getBoundingClientRect().top + window.scrollY - 8;
  const next = i + 1 < heads.length ? heads[i + 1].getBoundingClientRect().top + window.scrollY - 8
                                    : document.documentElement.scrollHeight;
  out.push([heads[i].tagName, heads[i].id || '', heads[i].innerText, top, next - top]);
}
return out;
"""


def screenshots(page: Path, out: Path, max_height: int, first_model: str) -> list[tuple[str, str, int]]:
    """One PNG per section of the page (headline, the first model's subsections, the cross-model sections)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", f"--window-size={WIDTH},1000"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    saved = []
    try:
        driver.get(page.as_uri())
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        sections = driver.execute_script(SECTIONS_JS)
        model = None
        for tag, ident, text, top, height in sections:
            if tag == "H2":
                model = ident
            if tag == "H3" and model not in (first_model, "cross"):
                continue  # the other models' sections look the same
            if tag == "H2" and ident not in ("headline", "cross", first_model):
                continue
            if height < 20:
                continue
            clip = {"x": 0, "y": top, "width": WIDTH, "height": min(height, max_height), "scale": 1}
            shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                          {"format": "png", "clip": clip, "captureBeyondViewport": True})
            img = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
            img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            slug = "".join(c if c.isalnum() else "-" for c in (ident or text).lower())
            slug = "-".join(w for w in slug.split("-") if w)[:40].rstrip("-")
            name = f"{len(saved):02d}-{slug}.png"
            path = out / name
            img.save(path, optimize=True)
            saved.append((name, text, path.stat().st_size))
    finally:
        driver.quit()
    return saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=2410)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--no-similarity", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "report")
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--max-height", type=int, default=1800)
    ap.add_argument("--report-only", action="store_true", help="the runs under --keep exist: report them again")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="report-screens-"))
    t0 = time.perf_counter()
    runs = sorted((root / "runs").glob("*-0*")) if args.report_only else build_runs(root / "runs", args.questions)
    print(f"synthetic runs in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    write_report(runs, root / "report", Options(n_boot=args.n_boot, similarity=not args.no_similarity))
    print(f"report in {time.perf_counter() - t0:.1f} s: {root / 'report' / 'report.html'}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    for name, text, size in screenshots(root / "report" / "report.html", args.out, args.max_height, next(iter(MODELS))):
        print(f"{name:<50} {size / 1024:6.0f} KB  {text}")


if __name__ == "__main__":
    main()
