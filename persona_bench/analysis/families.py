"""The declared families of tests of a report: every p-value the report shows belongs to one, and is corrected
within it; "significant" comes from the corrected value only.

Contract: a table (DataFrame) of an analysis dict that carries raw p-values has them in a column `p` (other
columns ending in `_p`, e.g. `spearman_p`, are second tests of the same hypotheses: each is corrected the same
way on its own, into `<column>_adj`; a table without `p` uses its first `_p` column as its p). A dict with a key
`p` (effects.domain_match) is one test. `apply` is called once, after every table of a model is computed, and
adds to each table of a family:
    p_adj        the p-value corrected within the family (Holm or Benjamini-Hochberg over all its tests)
    family       the family's name
    significant  p_adj < alpha (no raw p decides anything)
and, for families with equivalence tests (persona_vs_control, attributes), p_equiv (TOST against
`margin`, analysis.equivalence), p_equiv_adj (corrected the same way), equivalent and verdict.

Methods. Holm (family-wise error <= alpha, any dependence) where a row is a claim the report states in words
and a reader acts on: each persona against the control, the attribute effects (the paper's claims), the
named contrasts, the strategies, the rank agreement between models. Benjamini-Hochberg (false discovery rate
<= alpha under independence or positive dependence; family-wise error <= alpha when every null is true)
where a table is a screen read as a whole: factor levels, the question-clustered regression's terms,
mechanism correlations, logit-versus-generation agreement. Families are per model (the cross-model ones per
report); a table no family declares gets its own Holm family named after its place (and a warning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from persona_bench.analysis.equivalence import DEFAULT_MARGIN, paired_se, tost_p, verdicts
from persona_bench.analysis.stats import METHODS, adjust_p

log = logging.getLogger(__name__)

ALPHA = 0.05
METHOD_NAMES = METHODS


@dataclass(frozen=True)
class Family:
    name: str
    method: str  # "holm" | "fdr_bh" (statsmodels.stats.multitest names)
    paths: tuple  # where its tables sit in the analysis dict; "*" = every key of a dict
    what: str  # what it tests, for the report
    equivalence: bool = False  # TOST beside the difference test (needs estimate/delta and se, or n_better/n_worse)


MODEL_FAMILIES = (
    Family("persona_vs_control", "holm", (("persona_effects",),),
           "each persona against the control on the same questions (exact McNemar)", equivalence=True),
    Family("attributes", "holm", (("attributes", "estimates"), ("attributes",)),
           "attribute effects with questions and roles as random factors", equivalence=True),
    Family("contrasts", "holm", (("contrasts",), ("domain_match",)),
           "named contrasts (persona - control, template pairs, raw attribute groups) and the domain match"),
    Family("factor_levels", "fdr_bh", (("groups", "*"),), "each factor level against the control"),
    Family("regression", "fdr_bh", (("regression", "coefficients"),),
           "terms of the question-clustered regression (roles fixed)"),
    Family("strategies", "holm", (("strategies",),), "each persona-selection strategy against the control"),
    Family("mechanisms", "fdr_bh", (("correlations",),), "mechanism correlations"),
)
CROSS_FAMILIES = (
    Family("rank_agreement", "holm", (("rank_agreement",),), "role-ranking agreement between models"),
    Family("logit_vs_generation", "fdr_bh", (("logit_vs_generation",),), "logit scoring against generation"),
)


def p_columns(t: pd.DataFrame) -> list[str]:
    """The raw p-value columns of a table, its primary one first ([] if none)."""
    cols = [c for c in t.columns if isinstance(c, str) and c.endswith("_p") and not c.startswith("p_")]
    return (["p"] if "p" in t.columns else []) + cols


def _has_p(obj) -> bool:
    if isinstance(obj, pd.DataFrame):
        return bool(p_columns(obj))
    return isinstance(obj, dict) and "p" in obj and not isinstance(obj["p"], (dict, list, pd.DataFrame))


def walk(obj, path: tuple) -> Iterator[tuple[tuple, object]]:
    """(path, item) of every table or dict test below obj (into dicts only)."""
    if _has_p(obj):
        yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(v, path + (k,))


def _get(obj, path: tuple) -> Iterator[tuple[tuple, object]]:
    if not path:
        if _has_p(obj):
            yield (), obj
        return
    head, rest = path[0], path[1:]
    if not isinstance(obj, dict):
        return
    keys = list(obj) if head == "*" else [head] if head in obj else []
    for k in keys:
        for sub, item in _get(obj[k], rest):
            yield (k,) + sub, item


def locate(analysis: dict, family: Family) -> list[tuple[tuple, object]]:
    """(path, table or dict) of every test unit of the family present in the analysis dict."""
    seen, out = set(), []
    for path in family.paths:
        for p, item in _get(analysis, path):
            if id(item) not in seen:
                seen.add(id(item))
                out.append((p, item))
    return out


def _raw(item, col: str) -> np.ndarray:
    if isinstance(item, pd.DataFrame):
        return pd.to_numeric(item[col], errors="coerce").to_numpy(float) if col in item else np.full(len(item), np.nan)
    v = item.get(col)
    return np.array([np.nan if v is None else float(v)])


def adjust(p, method: str) -> np.ndarray:
    """Corrected p over the non-NaN entries of each row (1-D: one family; 2-D: one family per row, e.g. per
    simulated report); NaN stays NaN; method "holm" or "fdr_bh" (analysis.stats.adjust_p)."""
    return adjust_p(p, method)


def _put(item, col: str, values) -> None:
    if isinstance(item, pd.DataFrame):
        item[col] = values
    else:
        v = values[0]
        item[col] = v.item() if isinstance(v, np.generic) else v


def _equivalence_inputs(item) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(estimate, se, df) of a table's rows for the TOST, or None where it has none."""
    if not isinstance(item, pd.DataFrame):
        return None
    est_col = "estimate" if "estimate" in item else "delta" if "delta" in item else None
    if est_col is None:
        return None
    est = pd.to_numeric(item[est_col], errors="coerce").to_numpy(float)
    if "se" in item:
        se = pd.to_numeric(item["se"], errors="coerce").to_numpy(float)
    elif {"n_better", "n_worse", "n_questions"} <= set(item.columns):
        se = paired_se(item["n_better"], item["n_worse"], item["n_questions"])
    else:
        return None
    df = pd.to_numeric(item["df"], errors="coerce").to_numpy(float) if "df" in item else np.full(len(item), np.inf)
    return est, se, df


def _apply_family(units: list, family: Family, alpha: float, margin: float) -> dict:
    """Correct the family's tests jointly and write the columns; the family's record."""
    names = [u[0] for u in units]
    items = [u[1] for u in units]
    cols = {c for it in items for c in (p_columns(it) if isinstance(it, pd.DataFrame) else ["p"])}
    primary = {id(it): (p_columns(it)[0] if isinstance(it, pd.DataFrame) else "p") for it in items}
    sizes = [len(it) if isinstance(it, pd.DataFrame) else 1 for it in items]
    edges = np.cumsum([0] + sizes)
    prim = np.concatenate([_raw(it, primary[id(it)]) for it in items]) if items else np.array([])
    adj = adjust(prim, family.method)
    for it, a, b in zip(items, edges[:-1], edges[1:]):
        _put(it, "p_adj", adj[a:b])
        _put(it, "family", [family.name] * (b - a))
        _put(it, "significant", list(np.nan_to_num(adj[a:b], nan=1.0) < alpha))
    for col in sorted(cols - set(primary.values())):  # second tests of the same hypotheses
        raw = np.concatenate([_raw(it, col) for it in items])
        sec = adjust(raw, family.method)
        for it, a, b in zip(items, edges[:-1], edges[1:]):
            if isinstance(it, pd.DataFrame) and col in it:
                _put(it, f"{col}_adj", sec[a:b])
    record = {"name": family.name, "method": family.method, "method_name": METHOD_NAMES.get(family.method),
              "n_tests": int((~np.isnan(prim)).sum()), "alpha": alpha, "what": family.what,
              "tables": ["/".join(map(str, n)) for n in names],
              "n_significant": int((np.nan_to_num(adj, nan=1.0) < alpha).sum())}
    if family.equivalence:
        record.update(_apply_equivalence(items, family, alpha, margin))
    return record


def _apply_equivalence(items: list, family: Family, alpha: float, margin: float) -> dict:
    """TOST of every row of the family's tables, corrected with the family's method; verdict per row."""
    inputs = [(it, _equivalence_inputs(it)) for it in items]
    inputs = [(it, x) for it, x in inputs if x is not None]
    if not inputs:
        return {"equivalence_margin": margin, "n_equivalent": 0, "verdicts": {}}
    raw = [tost_p(est, se, margin, df) for _, (est, se, df) in inputs]
    adj = adjust(np.concatenate(raw), family.method)
    counts: dict[str, int] = {}
    start = 0
    for (it, _), r in zip(inputs, raw):
        a = adj[start: start + len(r)]
        start += len(r)
        eq = np.nan_to_num(a, nan=1.0) < alpha
        tested = ~np.isnan(pd.to_numeric(it["p_adj"], errors="coerce").to_numpy(float)) | ~np.isnan(a)
        it["p_equiv"], it["p_equiv_adj"], it["equivalent"] = r, a, eq
        it["verdict"] = verdicts(it["significant"].to_numpy(bool), eq, tested, margin)
        for v, c in pd.Series(it["verdict"]).value_counts().items():
            if v:
                counts[str(v)] = counts.get(str(v), 0) + int(c)
    return {"equivalence_margin": margin, "n_equivalent": int(sum(np.nan_to_num(adj, nan=1.0) < alpha)),
            "verdicts": counts}


def apply(analysis: dict, families=MODEL_FAMILIES, alpha: float = ALPHA, margin: float = DEFAULT_MARGIN,
          undeclared: bool = True) -> list[dict]:
    """Correct every family's tests in `analysis` (in place) and return the families' records (name, method,
    method_name, n_tests, alpha, what, tables, n_significant; with equivalence: equivalence_margin,
    n_equivalent, verdicts). Families with no table present are left out. undeclared=True: any other table
    or dict with a p-value becomes its own Holm family (named "undeclared: <path>"), with a warning."""
    records, claimed = [], set()
    for fam in families:
        units = locate(analysis, fam)
        claimed |= {id(u[1]) for u in units}
        if units:
            records.append(_apply_family(units, fam, alpha, margin))
    if undeclared:
        for path, item in list(walk(analysis, ())):
            if id(item) in claimed or path[-1:] == ("families",):
                continue
            name = "/".join(map(str, path))
            log.warning("p-values in %s belong to no declared family: corrected on their own (Holm)", name)
            fam = Family(f"undeclared: {name}", "holm", (path,), f"the tests in {name}")
            records.append(_apply_family([(path, item)], fam, alpha, margin))
            claimed.add(id(item))
    return records


def apply_cross(cross: dict, per_model: dict, alpha: float = ALPHA, margin: float = DEFAULT_MARGIN) -> list[dict]:
    """The cross-model families (CROSS_FAMILIES, per report). The headline table (side_by_side) repeats each
    model's "persona - control" contrast: it takes that contrast's corrected p from the model's own family."""
    sbs = cross.get("side_by_side")
    if isinstance(sbs, pd.DataFrame) and len(sbs) and "p" in sbs:
        adj = []
        for m in sbs["model"]:
            ct = (per_model.get(m) or {}).get("contrasts")
            row = ct[ct["contrast"] == "persona - control"] if isinstance(ct, pd.DataFrame) and "p_adj" in ct else []
            adj.append(float(row["p_adj"].iloc[0]) if len(row) else np.nan)
        sbs["p_adj"], sbs["family"] = adj, "contrasts"
        sbs["significant"] = np.nan_to_num(np.asarray(adj, dtype=float), nan=1.0) < alpha
    rest = {k: v for k, v in cross.items() if k != "side_by_side"}
    return apply(rest, CROSS_FAMILIES, alpha, margin)


def tables(analysis: dict, name: str, families=MODEL_FAMILIES) -> list[pd.DataFrame]:
    """The tables of the family called `name` present in the analysis dict."""
    fam = next((f for f in families if f.name == name), None)
    return [] if fam is None else [t for _, t in locate(analysis, fam) if isinstance(t, pd.DataFrame)]


def family_of(records: list[dict], name: str) -> Optional[dict]:
    """The record of the family called `name`, or None."""
    return next((r for r in records if r["name"] == name), None)


def describe(record: dict) -> str:
    """One sentence on a family for the report: what, how many tests, which correction."""
    text = (f"{record['what']}: {record['n_tests']} test(s), {record['method_name'] or record['method']} at "
            f"{record['alpha']:g}; {record['n_significant']} significant")
    if "equivalence_margin" in record:
        text += (f"; equivalence (TOST, margin {100 * record['equivalence_margin']:g} point(s), same correction): "
                 f"{record['n_equivalent']} within the margin")
    return text + "."
