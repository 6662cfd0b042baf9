"""Checks of a regression design (pure numpy/scipy): which columns are aliased, how collinear the rest are.

  independent_columns(X, names, tol)   (keep, dropped): the columns to estimate, and each aliased column named with
                                        the columns that determine it
  variance_inflation(X)                VIF of each column (1 / (1 - R^2) on the others, with an intercept)
  generalized_vif(X, groups)           Fox and Monette's GVIF of each group of columns (a factor's dummies)
  psd_clip(V)                          (V with negative eigenvalues set to 0, the smallest eigenvalue before)

Rank check: a QR decomposition with a relative tolerance, not the rank of X'X (which squares the condition number
and missed exactly redundant dummies on some designs, then reported standard errors of 0 or of hundreds). Scipy's
pivoted QR (column pivoting by norm) gives the numerical rank; which columns to drop is then decided in the
columns' own order, as R's lm does (LINPACK dqrdc2's limited pivoting): a column whose component orthogonal to
the columns kept before it is shorter than tol x its own length is aliased. So the declared order of the terms
(template before role category before interpersonal before gender...) decides which member of an aliased set goes.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

RANK_TOL = 1e-7  # relative: |R_jj| / ||x_j|| below this is aliased (exact aliasing gives ~1e-15, real designs > 1e-3)


def _explain(Xs: np.ndarray, j: int, keep: list[int], names: list[str]) -> str:
    """`names[j] = a*names[i] + ...`: the kept columns that determine an aliased column (largest weights first)."""
    if not keep:
        return f"{names[j]} is zero in every row"
    coef = np.linalg.lstsq(Xs[:, keep], Xs[:, j], rcond=None)[0]
    big = [(c, names[i]) for c, i in zip(coef, keep) if abs(c) > 1e-6]
    big.sort(key=lambda t: -abs(t[0]))
    return f"{names[j]} is determined by {', '.join(n for _, n in big[:4])}{' ...' if len(big) > 4 else ''}"


def independent_columns(X: np.ndarray, names: list[str], tol: float = RANK_TOL) -> tuple[list[int], list[str]]:
    """(indices of the columns to keep, in order; one text per aliased column naming what determines it).

    X: n x p (n may be huge: it is reduced once to its p x p R factor, whose columns have X's geometry)."""
    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    if p == 0:
        return [], []
    norms = np.linalg.norm(X, axis=0)
    zero = norms <= np.finfo(float).tiny
    if X.shape[0] > p:
        X = scipy.linalg.qr(X, mode="r", check_finite=False)[0][:p]  # same column geometry, p x p
    Xs = X / np.where(zero, 1.0, norms)
    Xs[:, zero] = 0.0
    r_piv = scipy.linalg.qr(Xs, mode="r", pivoting=True, check_finite=False)[0]
    rank = int((np.abs(np.diag(r_piv)) > tol).sum())
    keep, dropped = [], []
    for j in range(p):
        if zero[j]:
            dropped.append(f"{names[j]} is zero in every row")
            continue
        r = scipy.linalg.qr(Xs[:, keep + [j]], mode="r", check_finite=False)[0]
        if abs(r[len(keep), len(keep)]) > tol:
            keep.append(j)
        else:
            dropped.append(_explain(Xs, j, keep, names))
    if len(keep) != rank:  # the ordered rule and the pivoted rank disagree only at the tolerance's edge
        dropped.append(f"(numerical rank {rank} by pivoted QR, {len(keep)} columns kept in order; tol {tol:g})")
    return keep, dropped


def variance_inflation(X: np.ndarray) -> np.ndarray:
    """VIF_j = 1 / (1 - R^2_j), R^2_j of column j on the other columns and an intercept (the diagonal of the
    inverse correlation matrix); inf where a column is aliased or constant."""
    X = np.asarray(X, dtype=float)
    if X.shape[1] == 0:
        return np.zeros(0)
    sd = X.std(axis=0)
    if X.shape[1] == 1:
        return np.where(sd > 0, 1.0, np.inf)
    out = np.full(X.shape[1], np.inf)
    ok = sd > 0
    if ok.sum() == 1:
        out[ok] = 1.0
    elif ok.any():
        c = np.corrcoef(X[:, ok], rowvar=False)
        try:
            out[ok] = np.diag(np.linalg.inv(c)) if np.linalg.cond(c) < 1e12 else np.inf
        except np.linalg.LinAlgError:
            pass
    return out


def generalized_vif(X: np.ndarray, groups: list[list[int]]) -> list[float]:
    """Fox and Monette's (1992) generalized VIF of each group of columns: det(R_gg) det(R_oo) / det(R), R the
    correlation matrix of all columns. It does not depend on which level of a factor is the reference;
    GVIF^(1/(2 df)) is comparable with sqrt(VIF) of a single column. inf where the design is singular."""
    X = np.asarray(X, dtype=float)
    if X.shape[1] == 0:
        return [np.nan for _ in groups]
    c = np.atleast_2d(np.corrcoef(X, rowvar=False))
    det = np.linalg.det(c)
    out = []
    for g in groups:
        other = [i for i in range(X.shape[1]) if i not in g]
        if not np.isfinite(det) or det <= 1e-12:
            out.append(np.inf)
            continue
        d_g = np.linalg.det(c[np.ix_(g, g)]) if g else 1.0
        d_o = np.linalg.det(c[np.ix_(other, other)]) if other else 1.0
        out.append(float(d_g * d_o / det))
    return out


def psd_clip(V: np.ndarray) -> tuple[np.ndarray, float]:
    """(V made positive semidefinite by setting its negative eigenvalues to 0, V's smallest eigenvalue)."""
    V = (V + V.T) / 2
    if V.size == 0:
        return V, 0.0
    w, v = np.linalg.eigh(V)
    if w.min() >= 0:
        return V, float(w.min())
    return (v * np.clip(w, 0, None)) @ v.T, float(w.min())
