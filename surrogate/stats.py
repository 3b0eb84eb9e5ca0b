"""The two statistics every fidelity figure of the project is made of: Pearson r and ROC AUC (numpy only)."""

from __future__ import annotations

import numpy as np


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over the pairs where both are finite (a reader gives NaN where it finds no face);
    NaN with fewer than 3 pairs or a constant side."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    if len(a) < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of scores for boolean labels (ties count half); NaN with one class."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    values, inverse = np.unique(scores, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(values))
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based ranks, ties averaged
    return float((mean_rank[inverse][labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
