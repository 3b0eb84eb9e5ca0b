"""Memorisation: are generated samples closer to a training image than training images are to each other?

A GAN trained on private faces can reproduce some of them. For each generated sample we take the
distance to its nearest training image, and compare it with the training set's own leave-one-out
nearest-neighbour distances: a sample closer than the ``threshold_percentile`` of those is flagged as a
likely copy. A positive control (mildly degraded copies of training images) must be flagged, which
shows the threshold is not so tight that it could never fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def features(images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """(N, size*size) float32 grey vectors in [0, 1], each image resized to size x size."""
    from PIL import Image

    from surrogate.face_align import to_gray

    out = np.empty((len(images), size * size), np.float32)
    for i, image in enumerate(images):
        gray = Image.fromarray(to_gray(np.asarray(image)))
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
        out[i] = np.asarray(gray, np.float32).ravel() / 255.0
    return out


def nearest_distances(
    queries: np.ndarray, reference: np.ndarray, *, exclude_self: bool = False, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance of every query to its nearest reference row, and that row's index.

    ``exclude_self``: queries ARE the reference (same order); a row's distance to itself is ignored.
    """
    ref_sq = (reference.astype(np.float64) ** 2).sum(1)
    best = np.empty(len(queries))
    index = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk].astype(np.float64)
        d2 = (q**2).sum(1)[:, None] + ref_sq[None, :] - 2 * q @ reference.T.astype(np.float64)
        if exclude_self:
            rows = np.arange(len(q))
            d2[rows, start + rows] = np.inf
        index[start : start + len(q)] = d2.argmin(1)
        best[start : start + len(q)] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return best, index


@dataclass(frozen=True)
class MemorisationResult:
    samples: int
    threshold: float
    threshold_percentile: float
    flagged: int
    flagged_fraction: float
    sample_nn_median: float
    training_nn_median: float
    ratio_median: float  # median sample NN distance / median training NN distance (< 1: closer than usual)

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def training_threshold(training: np.ndarray, percentile: float) -> tuple[float, np.ndarray]:
    """The flagging threshold and the training set's leave-one-out nearest-neighbour distances."""
    if len(training) < 2:
        raise ValueError("memorisation needs at least two training images")
    own, _ = nearest_distances(training, training, exclude_self=True)
    return float(np.percentile(own, percentile)), own


def memorisation(
    samples: np.ndarray, training: np.ndarray, threshold: float, percentile: float, training_nn: np.ndarray
) -> tuple[MemorisationResult, np.ndarray]:
    """Flag samples whose nearest training image is closer than ``threshold``; (result, distances)."""
    distances, _ = nearest_distances(samples, training)
    flagged = int((distances < threshold).sum())
    train_median = float(np.median(training_nn))
    sample_median = float(np.median(distances)) if len(distances) else float("nan")
    return MemorisationResult(
        samples=len(samples),
        threshold=threshold,
        threshold_percentile=percentile,
        flagged=flagged,
        flagged_fraction=flagged / len(samples) if len(samples) else 0.0,
        sample_nn_median=sample_median,
        training_nn_median=train_median,
        ratio_median=sample_median / train_median if train_median > 0 else float("nan"),
    ), distances
