"""Attribute effects: one model per run for accuracy on the persona's template and its role's kind (category,
interpersonal, gender, expertise domain) and domain match, with questions and roles as crossed random factors.

  attribute_effects(df=None, grid=None)  dict: estimates (DataFrame: term, factor, level, reference, estimate,
                                         se, df, ci_low, ci_high, p, n_roles, n_personas; p raw two-sided, no
                                         significance flag), collinearity (collinearity's table), warnings,
                                         dropped (aliased terms, each named with what determines it),
                                         dropped_terms, notes, specification, n_obs, n_questions, n_roles,
                                         n_personas, seconds
  collinearity(personas, estimates=None) (table: factor, level, reference, n_roles, n_personas, vif, gvif,
                                         main_category, warning; warnings: list of plain sentences)

The model (docs/statistics.md, "Attribute effects"): a linear probability model of each persona row's correctness
with one intercept per question, absorbed by within-question demeaning (so the control's answer, a constant of the
question, cancels: the same fit as on persona-minus-control differences):

  correct_qk = a_q + template(k) + category(r) + interpersonal(r) + gender(r) + domain_role(r)
               + g * (in_domain_qk - mean of in_domain over persona k's questions) + e_qk,

r the role of persona k. Attributes are constant within a role, so they are identified only between roles; the
role words are a sample of the kinds of role the paper talks about, and the covariance is two-way cluster-robust
by question and by role (Cameron, Gelbach and Miller 2011): V = V_role + V_question - V_question x role. V_role is
the bias-reduced CR2 estimator (Bell and McCaffrey 2002), V_question and the intersection CR1 (G/(G-1) (N-1)/(N-p));
negative eigenvalues of the sum are set to 0 (noted). Intervals and p use t with Bell-McCaffrey degrees of freedom
for the role dimension (computed on the persona-level design, working model: a role's personas equicorrelated), which fall to
a handful when a term rests on a handful of roles; the in-domain term uses (domain roles with an in-domain
question) - 1. Domain match is centred within persona, so it compares a role on its own domain's questions with
the same role elsewhere, and, with the question intercepts, with the other personas on the same question: a
subject on which every persona is weaker is absorbed by its questions' intercepts.

Everything is computed from Q x K matrices and per-role sums (no long design matrix): 0.6 s at the paper's 162
roles x 4 templates x 2,410 questions (1.56 million rows) on one core, 2.3 s with the pivot of the predictions table.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from persona_bench.analysis.design import (
    RANK_TOL,
    generalized_vif,
    independent_columns,
    psd_clip,
    variance_inflation,
)
from persona_bench.analysis.matrix import PersonaMatrix

FACTORS = ("template", "role_category", "interpersonal", "gender", "domain_role")  # declared order: aliased later
#   terms are dropped first (in the paper's role list gender=unknown is exactly non-interpersonal)
ROLE_FACTORS = FACTORS[1:]  # constant within a role
REFERENCES = {"template": "speaker", "role_category": "occupation", "interpersonal": "non-interpersonal",
              "gender": "neutral", "domain_role": "no domain"}  # preferred reference levels (else the most common)
IN_DOMAIN = "in_domain"
MIN_ROLES = 5  # a level held by fewer roles gets a warning
MAX_VIF = 5.0  # a level whose role-level VIF exceeds this gets a warning
LEVEL = 0.95
COLUMNS = ["term", "factor", "level", "reference", "estimate", "se", "df", "ci_low", "ci_high", "p", "n_roles",
           "n_personas"]


def _factor_table(personas: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per persona (arrays of str): template, role and the role-level factors as labels (domain_role: 'domain role' or
    'no domain')."""
    t = {c: personas[c].to_numpy().astype(str) for c in ("template", "role", "role_category", "interpersonal", "gender")}
    t["domain_role"] = np.where(personas["domain_role"].to_numpy(bool), "domain role", "no domain")
    return t


def _dummies(t: dict[str, np.ndarray], factors=FACTORS) -> tuple[np.ndarray, list[tuple[str, str, str]], list[str]]:
    """Reference-coded dummies of `factors`: (matrix, (factor, level, reference) per column, one-level notes). The
    reference is REFERENCES' level where present, else the most common."""
    cols, terms, notes = [], [], []
    for f in factors:
        levels, counts = np.unique(t[f], return_counts=True)
        if len(levels) < 2:
            notes.append(f"{f} has one level ({levels[0] if len(levels) else 'none'}): not estimated")
            continue
        ref = REFERENCES.get(f) if REFERENCES.get(f) in levels else str(levels[np.argmax(counts)])
        for lv in levels:
            if lv != ref:
                cols.append((t[f] == lv).astype(float))
                terms.append((f, str(lv), ref))
    return (np.column_stack(cols) if cols else np.zeros((len(t["role"]), 0))), terms, notes


def _inv_sqrt_psd(a: np.ndarray, floor: float = 1e-10) -> np.ndarray:
    """a^(-1/2) for a stack of symmetric positive (semi)definite matrices (eigenvalues floored)."""
    w, v = np.linalg.eigh(a)
    return (v * (1 / np.sqrt(np.maximum(w, floor)))[..., None, :]) @ np.swapaxes(v, -1, -2)


def _bell_mccaffrey_df(X: np.ndarray, clusters: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """Bell-McCaffrey degrees of freedom of each coefficient but the first (the intercept) of an OLS on X with CR2
    errors clustered by `clusters` (Imbens and Kolesar 2016, eq. 11), under their working model: equicorrelated rows
    within a cluster, rho estimated from the residuals `resid` (clipped to [0, 0.99]). X is small (one row per
    persona). With M = I - H and w_g = (I - H_gg)^(-1/2) X_g A l, G'G = diag(w_g'w_g) - (X'w)' A (X'w), so no
    n x n matrix is formed."""
    n, p = X.shape
    A = np.linalg.pinv(X.T @ X)
    n_c = clusters.max() + 1
    sizes = np.bincount(clusters, minlength=n_c)
    w = np.zeros((p - 1, n))
    for size in np.unique(sizes[sizes > 0]):  # clusters of one size at once
        idx = np.stack([np.flatnonzero(clusters == c) for c in np.flatnonzero(sizes == size)])  # n_cs x size
        Xg = X[idx]
        B = _inv_sqrt_psd(np.eye(size) - Xg @ A @ np.swapaxes(Xg, 1, 2))
        w[:, idx] = np.transpose(B @ (Xg @ A[:, 1:]), (2, 0, 1))
    member = np.zeros((n, n_c))
    member[np.arange(n), clusters] = 1.0
    sums = resid @ member
    pairs = (sizes * (sizes - 1)).sum()
    total = (resid * resid).sum()
    rho = float(np.clip(((sums ** 2).sum() - total) / pairs / (total / n), 0, 0.99)) if pairs and total > 0 else 0.0
    Xm = X.T @ member  # p x n_c: each cluster's rows of X summed
    out = np.empty(p - 1)
    for j in range(p - 1):
        XW = (X * w[j][:, None]).T @ member  # p x n_c: X_g' w_g
        AXW = A @ XW
        GtG = np.diag((w[j] * w[j]) @ member) - XW.T @ AXW
        S = np.diag(w[j] @ member) - Xm.T @ AXW  # 1_c' G_h
        C = (1 - rho) * GtG + rho * (S.T @ S)
        out[j] = np.trace(C) ** 2 / max((C * C).sum(), 1e-300)
    return out


def _fit(g: PersonaMatrix, t: pd.DataFrame) -> dict:
    """Estimates and the two-way covariance; see the module docstring."""
    W = ~np.isnan(g.correct)
    nq_all = W.sum(1)
    rows = nq_all >= 2  # a question answered by one persona says nothing within the question
    W, Y = W[rows], np.where(W[rows], g.correct[rows], 0.0)
    Wf = W.astype(float)
    nq, ck = Wf.sum(1), Wf.sum(0)
    Yt = np.where(W, Y - (Y.sum(1) / nq)[:, None], 0.0)
    Z, terms, notes = _dummies(t)
    Z = Z - (ck @ Z) / max(ck.sum(), 1)  # centred: the demeaning ignores it, the Gram below loses no digits to it
    names = [f"{f}={lv}" for f, lv, _ in terms]
    dom = g.personas["domain_role"].to_numpy(bool)
    D = (g.in_domain[rows] & dom[None, :] & W).astype(float)
    Dt = np.where(W, D - D.sum(0) / np.maximum(ck, 1), 0.0)  # centred within persona
    Dt = np.where(W, Dt - (Dt.sum(1) / nq)[:, None], 0.0)  # and within question
    m = (Wf @ Z) / nq[:, None]  # Q x pz: mean dummy over the question's personas
    pz = Z.shape[1]
    G = np.zeros((pz + 1, pz + 1))
    G[:pz, :pz] = Z.T @ (ck[:, None] * Z) - m.T @ (nq[:, None] * m)
    G[:pz, pz] = G[pz, :pz] = Z.T @ Dt.sum(0)
    G[pz, pz] = (Dt * Dt).sum()
    b = np.append(Z.T @ Yt.sum(0), (Dt * Yt).sum())
    # Rank check on the persona-level design (exact when the questions link all personas) and on in_domain's norm
    # before and after centring; not on G, whose entries are sums over a million rows.
    keep, dropped = independent_columns(np.sqrt(ck)[:, None] * Z, names)
    d_norm = np.sqrt((D * D).sum())
    if d_norm > 0 and np.sqrt(G[pz, pz]) > RANK_TOL * d_norm:
        keep.append(pz)
    else:
        dropped.append(f"{IN_DOMAIN} is " + ("zero in every row" if d_norm == 0 else
                                            "constant within every persona (no domain role has both kinds of question)"))
    if not keep:
        return {"keep": [], "dropped": dropped, "notes": notes + ["no term to estimate"], "n_obs": int(W.sum()),
                "n_questions": int(rows.sum())}
    kz = [j for j in keep if j < pz]
    has_d = pz in keep
    A = np.linalg.inv(G[np.ix_(keep, keep)])
    beta = A @ b[keep]
    bz, gam = beta[: len(kz)], (beta[-1] if has_d else 0.0)
    Zk, mk = Z[:, kz], m[:, kz]
    U = np.where(W, Yt - (Zk @ bz)[None, :] + (mk @ bz)[:, None] - gam * Dt, 0.0)
    UD = U * Dt

    # Score sums by question, by role, by question x role.
    roles, rc = np.unique(g.personas["role"].to_numpy(str), return_inverse=True)
    order = np.argsort(rc, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(rc[order]) != 0])
    s_q = np.column_stack([U @ Zk - U.sum(1)[:, None] * mk] + ([UD.sum(1)] if has_d else []))
    s_k = np.column_stack([Zk * U.sum(0)[:, None] - U.T @ mk] + ([UD.sum(0)] if has_d else []))
    s_r = np.zeros((len(roles), len(keep)))
    np.add.at(s_r, rc, s_k)
    Us = U[:, order]
    UR = np.add.reduceat(Us, starts, axis=1)
    parts = [np.add.reduceat(Us * Zk[order, j], starts, axis=1) - UR * mk[:, [j]] for j in range(len(kz))]
    if has_d:
        parts.append(np.add.reduceat(UD[:, order], starts, axis=1))
    s_qr = np.stack(parts, axis=-1).reshape(-1, len(keep))
    n, p = int(W.sum()), len(keep)

    def cr1(s):
        groups = int((np.abs(s).sum(1) > 0).sum())
        return groups / max(groups - 1, 1) * (n - 1) / max(n - p, 1) * (s.T @ s)

    # CR2 by role: per role the Gram block M_g, and the score sum adjusted by (I - H_gg)^(-1/2).
    a_k = Wf.T @ mk  # K x pz: sum over the persona's questions of m_q
    Mk = np.zeros((len(ck), p, p))
    Mk[:, :len(kz), :len(kz)] = (ck[:, None, None] * Zk[:, :, None] * Zk[:, None, :]
                                 - Zk[:, :, None] * a_k[:, None, :] - a_k[:, :, None] * Zk[:, None, :])
    if has_d:
        zd = Zk * Dt.sum(0)[:, None] - Dt.T @ mk
        Mk[:, :len(kz), -1] = Mk[:, -1, :len(kz)] = zd
        Mk[:, -1, -1] = (Dt * Dt).sum(0)
    Mr = np.zeros((len(roles), p, p))
    np.add.at(Mr, rc, Mk)
    WR = np.add.reduceat(Wf[:, order], starts, axis=1)  # Q x R
    Mr[:, :len(kz), :len(kz)] += (WR.T @ (mk[:, :, None] * mk[:, None, :]).reshape(len(mk), -1)).reshape(
        len(roles), len(kz), len(kz))
    w, v = np.linalg.eigh(A)
    Ah = (v * np.sqrt(np.maximum(w, 0))) @ v.T
    lam, V = np.linalg.eigh(Ah @ Mr @ Ah)
    lam = np.clip(lam, 0, 1 - 1e-10)
    f = np.where(lam > 1e-12, (1 / np.sqrt(1 - lam) - 1) / np.where(lam > 1e-12, lam, 1), 0.5)
    inner = np.einsum("rij,rj->ri", np.swapaxes(V, 1, 2), (s_r @ Ah))  # V' Ah s_g
    adj = s_r + np.einsum("rij,rj->ri", Mr @ Ah @ V, f * inner)
    meat = adj.T @ adj + cr1(s_q) - cr1(s_qr)
    meat_psd, min_eig = psd_clip(meat)
    if min_eig < -1e-12 * max(np.abs(np.diag(meat)).max(), 1e-300):
        notes.append(f"the two-way covariance's middle matrix had a negative eigenvalue ({min_eig:.3g}); negative "
                     "eigenvalues were set to 0 (Cameron, Gelbach and Miller 2011)")
    cov = A @ meat_psd @ A

    # Degrees of freedom: Bell-McCaffrey for the role dimension on the persona-level design; in_domain: roles - 1.
    sw = np.sqrt(ck)[:, None]
    resid = U.sum(0) / np.sqrt(np.maximum(ck, 1))  # persona-level residuals of the sqrt(c)-weighted persona means
    dfs = list(_bell_mccaffrey_df(np.column_stack([sw, sw * Zk]), rc, resid)) if kz else []
    d_roles = int(np.unique(rc[(D > 0).any(0)]).size)
    if has_d:
        dfs.append(float(max(d_roles - 1, 1)))
    return {"beta": beta, "cov": cov, "df": np.array(dfs), "keep": keep, "terms": terms, "names": names,
            "dropped": dropped, "notes": notes, "n_obs": n, "n_questions": int(rows.sum()), "rc": rc,
            "d_roles": d_roles, "pz": pz}


def attribute_effects(df: Optional[pd.DataFrame] = None, grid: Optional[PersonaMatrix] = None,
                      level: float = LEVEL) -> dict:
    """The attribute model of one model's predictions (or its matrix `grid`); see the module docstring."""
    started = time.perf_counter()
    g = grid if grid is not None else PersonaMatrix.from_predictions(df)
    t = _factor_table(g.personas)
    out = {"estimates": pd.DataFrame(columns=COLUMNS), "dropped": [], "notes": [], "n_obs": 0,
           "n_questions": int(len(g.questions)), "n_roles": len(set(t["role"])), "n_personas": len(t["role"])}
    answered = (~np.isnan(g.correct)).sum(0) > 0
    fit = _fit(g, t) if answered.sum() >= 2 else {"keep": [], "dropped": [], "n_obs": 0, "n_questions": 0,
                                                     "notes": ["fewer than two personas answered: nothing to estimate"]}
    out.update(dropped=fit["dropped"], notes=fit["notes"], n_obs=fit["n_obs"], n_questions=fit["n_questions"])
    if fit["keep"]:
        role = t["role"]
        rows = []
        for i, j in enumerate(fit["keep"]):
            if j < fit["pz"]:
                f, lv, ref = fit["terms"][j]
                sel = (t[f] == lv) & answered
            else:
                f, lv, ref = "domain_match", "in-domain", "out-of-domain (same role)"
                sel = g.personas["domain_role"].to_numpy(bool) & answered
            rows.append({"term": f"{f}={lv}", "factor": f, "level": lv, "reference": ref,
                         "n_roles": len(set(role[sel])) if j < fit["pz"] else fit["d_roles"], "n_personas": int(sel.sum())})
        est, se, dof = fit["beta"], np.sqrt(np.diag(fit["cov"])), fit["df"]
        half = stats.t.ppf(0.5 + level / 2, dof) * se
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(se > 0, 2 * stats.t.sf(np.abs(est) / se, dof), np.nan)
        rows = pd.DataFrame(rows).assign(estimate=est, se=se, df=dof, ci_low=est - half, ci_high=est + half, p=p)
        out["estimates"] = rows[COLUMNS]
    table, warnings = collinearity(g.personas[answered] if answered.any() else g.personas, out["estimates"])
    dropped_terms = [d.split(" is ")[0] for d in out["dropped"] if " is " in d]
    role_levels = set(table["factor"] + "=" + table["level"].astype(str))
    warnings += [f"not estimated: {d}" for d in out["dropped"] if d.split(" is ")[0] not in role_levels]
    out.update(collinearity=table, warnings=warnings, dropped_terms=dropped_terms,
               specification=SPECIFICATION, seconds=round(time.perf_counter() - started, 3))
    return out


SPECIFICATION = (
    "correct ~ template + role_category + interpersonal + gender + domain_role + in_domain (centred within persona) "
    "+ (1 | question) + (1 | role): linear probability model on the persona rows, question intercepts absorbed by "
    "within-question demeaning (equivalently persona-minus-control differences); covariance two-way cluster-robust "
    "by question and role (Cameron-Gelbach-Miller: V_role + V_question - V_question x role; V_role CR2, the others "
    "CR1; negative eigenvalues set to 0); t intervals and raw two-sided p with Bell-McCaffrey degrees of freedom for "
    "the role dimension (in_domain: domain roles - 1). Attribute terms compare kinds of role, so roles are the unit; "
    "domain match compares a role on its own domain's questions with itself elsewhere and with the other personas on "
    "the same questions.")


def collinearity(personas: pd.DataFrame, estimates: Optional[pd.DataFrame] = None) -> tuple[pd.DataFrame, list[str]]:
    """How many roles and personas hold each level of each role attribute, the role-level variance inflation of each
    level's dummy (VIF, all attributes together) and of each factor (Fox-Monette GVIF^(1/(2 df))), and a plain
    warning for every level held by fewer than MIN_ROLES roles, with a VIF above MAX_VIF, aliased, or (with
    `estimates`) whose interval rests on fewer than MIN_ROLES degrees of freedom."""
    t = _factor_table(personas)
    first = np.unique(t["role"], return_index=True)[1]
    by_role = {f: v[first] for f, v in t.items()}
    X, terms, _ = _dummies(by_role, ROLE_FACTORS)
    keep, _ = independent_columns(X - X.mean(0), [f"{f}={lv}" for f, lv, _ in terms]) if X.shape[1] else ([], [])
    vif = np.full(len(terms), np.inf)
    vif[keep] = variance_inflation(X[:, keep])
    groups = {f: [i for i, j in enumerate(keep) if terms[j][0] == f] for f in ROLE_FACTORS}
    gv = dict(zip(groups, generalized_vif(X[:, keep], list(groups.values()))))
    column = {f"{f}={lv}": j for j, (f, lv, _) in enumerate(terms)}
    dfs = dict(zip(estimates["term"], estimates["df"])) if estimates is not None and len(estimates) else {}
    cat = by_role["role_category"]
    rows, warnings = [], []
    for f in ROLE_FACTORS:
        ref = next((r for ff, _, r in terms if ff == f), None)
        values, persona_values = by_role[f], t[f]
        for lv in sorted(set(values)):
            mask = values == lv
            n = int(mask.sum())
            j = column.get(f"{f}={lv}")
            v = np.nan if j is None else vif[j]
            cats, counts = np.unique(cat[mask], return_counts=True)
            main = f"{counts.max()} of {n} {cats[counts.argmax()]}" if f != "role_category" else ""
            why = [f"{n} role{'s' if n != 1 else ''}"] if n < MIN_ROLES else []
            aliased = j is not None and not np.isfinite(v)
            if aliased:
                why.append("aliased with the attributes before it")
            elif v > MAX_VIF:
                why.append(f"VIF {v:.1f}")
            if dfs.get(f"{f}={lv}", np.inf) < MIN_ROLES:
                why.append(f"{dfs[f'{f}={lv}']:.1f} degrees of freedom")
            warn = ""
            if why:
                warn = (f"{f}={lv}" + (f" (vs {ref})" if ref and lv != ref else "") + f": {n} roles"
                        + (f", {main} roles" if main else "") + "; " + "; ".join(why)
                        + (": not estimated" if aliased else f": the adjusted {f} effect rests on few roles"
                           if n < MIN_ROLES or len(why) > 1 or "VIF" not in why[0]
                           else f": collinear with the other attributes, the adjusted {f} effect rests on the few "
                           "roles that break the pattern"))
                warnings.append(warn)
            rows.append({"factor": f, "level": lv, "reference": lv == ref, "n_roles": n,
                         "n_personas": int((persona_values == lv).sum()), "vif": v,
                         "gvif": gv[f] ** (1 / (2 * max(len(groups[f]), 1))) if f in gv else np.nan,
                         "main_category": main, "warning": warn})
    return pd.DataFrame(rows, columns=["factor", "level", "reference", "n_roles", "n_personas", "vif", "gvif",
                                       "main_category", "warning"]), warnings
