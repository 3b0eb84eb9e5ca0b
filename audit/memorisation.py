"""Memorisation: are generated samples closer to a training image than training images are to each other?

A GAN trained on private faces can reproduce some of them. For each generated sample we take the
distance to its nearest training image, and compare it with the training set's own leave-one-out
nearest-neighbour distances: a sample closer than the ``threshold_percentile`` of those is flagged as a
likely copy. A positive control (mildly degraded copies of training images) must be flagged, which
shows the threshold is not so tight that it could never fire.

Pixel closeness also flags generators that are merely blurry or low in contrast: such samples sit near
many smooth training faces without copying any of them. The blur-matched check (``blur_matched``)
separates the two: the training images are blurred until they are as smooth as the samples, only the
inner face is compared (the central part of the frame: backgrounds and hair do not count), every image
is standardised (zero mean, unit variance, so contrast and brightness do not count), and the threshold
is taken again on that blurred training set. A blurry sample is then only flagged if it is closer to one
training face than blurred training faces are to each other; copies blurred just as much (its control)
still are.
"""

from __future__ import annotations

import math
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
    queries: np.ndarray,
    reference: np.ndarray,
    *,
    exclude_self: bool = False,
    exclude: np.ndarray | None = None,
    chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance of every query to its nearest reference row, and that row's index.

    ``exclude_self``: queries ARE the reference (same order); a row's distance to itself is ignored.
    ``exclude``: per query, a reference row to ignore (the query's own row when queries are a subset).
    """
    if exclude_self:
        exclude = np.arange(len(queries))
    ref_sq = (reference.astype(np.float64) ** 2).sum(1)
    best = np.empty(len(queries))
    index = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk].astype(np.float64)
        d2 = (q**2).sum(1)[:, None] + ref_sq[None, :] - 2 * q @ reference.T.astype(np.float64)
        if exclude is not None:
            d2[np.arange(len(q)), exclude[start : start + len(q)]] = np.inf
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


def blur(features: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Gaussian blur (sigma in pixels, reflected edges) of (N, size*size) grey vectors."""
    if sigma <= 0:
        return features.astype(np.float32, copy=True)
    radius = max(1, math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((size, size), np.float64)
    period = 2 * size
    for i in range(size):
        for offset, weight in zip(offsets, weights, strict=True):
            j = (i + offset) % period  # reflect: ... 1 0 | 0 1 ... size-1 | size-1 ...
            matrix[i, j if j < size else period - 1 - j] += weight
    images = features.reshape(-1, size, size).astype(np.float64)
    return (matrix @ images @ matrix.T).reshape(len(features), -1).astype(np.float32)


def standardise(features: np.ndarray) -> np.ndarray:
    """Each row to zero mean and unit variance: brightness and contrast no longer count."""
    centred = features - features.mean(axis=1, keepdims=True)
    return (centred / np.maximum(centred.std(axis=1, keepdims=True), 1e-6)).astype(np.float32)


def inner_face(features: np.ndarray, size: int, fraction: float) -> np.ndarray:
    """The central ``fraction`` of each (size x size) image, flattened: the face without its surroundings."""
    keep = max(1, round(size * fraction))
    start = (size - keep) // 2
    images = features.reshape(-1, size, size)[:, start : start + keep, start : start + keep]
    return images.reshape(len(features), -1)


def sharpness(features: np.ndarray, size: int) -> np.ndarray:
    """Per image: mean squared difference of neighbouring pixels after standardising (0 = flat)."""
    images = standardise(features).reshape(-1, size, size)
    return (np.diff(images, axis=1) ** 2).mean(axis=(1, 2)) + (np.diff(images, axis=2) ** 2).mean(axis=(1, 2))


def matching_sigma(samples: np.ndarray, training: np.ndarray, size: int, *, step: float = 0.25,
                   largest: float = 4.0) -> float:
    """The smallest blur (sigma, pixels) that makes the training images' median sharpness at most the
    samples' (0 for samples as sharp as the training images)."""
    target = float(np.median(sharpness(samples, size)))
    for sigma in np.arange(0.0, largest + step / 2, step):
        if float(np.median(sharpness(blur(training, size, float(sigma)), size))) <= target:
            return float(sigma)
    return largest


@dataclass(frozen=True)
class BlurMatchedResult:
    sigma: float  # blur applied to the training images (and to the control copies)
    face_fraction: float  # central share of the frame's width and height compared
    threshold: float  # percentile of the blurred training set's own nearest-neighbour distances
    samples: int
    flagged: int
    flagged_fraction: float
    ratio_median: float  # median sample NN distance / median blurred-training NN distance
    control_flagged_fraction: float  # degraded training copies blurred by sigma; should be ~1

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def blur_matched(
    samples: np.ndarray,
    training: np.ndarray,
    controls: np.ndarray,
    size: int,
    percentile: float,
    rng: np.random.Generator,
    *,
    threshold_queries: int = 2000,
    face_fraction: float = 0.625,
) -> tuple[BlurMatchedResult, np.ndarray]:
    """Memorisation with the training set blurred to the samples' sharpness, on the inner face
    (``face_fraction`` of the frame), contrast taken out.

    Without the crop, rendered surrogates on a plain backdrop sat closer to plain-backdrop training faces
    than textured-backdrop ones sit to anything (3-D surrogates: 59 / 1000 flagged, their nearest
    training image of another person in 97% of cases); on the inner face 3 / 1000 (gan_generator v2's
    training set data/synth64v2, 1,000 samples each).

    ``controls`` are degraded copies of training images (features); they are blurred by the same sigma
    and must still be flagged. The threshold uses up to ``threshold_queries`` training rows (leave-one-out
    against the whole set) to keep the cost linear in the training set's size.
    """
    sigma = matching_sigma(samples, training, size)
    def prepare(images: np.ndarray, blur_sigma: float) -> np.ndarray:
        return standardise(inner_face(blur(images, size, blur_sigma), size, face_fraction))

    reference = prepare(training, sigma)
    pick = rng.choice(len(reference), size=min(threshold_queries, len(reference)), replace=False)
    own, _ = nearest_distances(reference[pick], reference, exclude=pick)
    threshold = float(np.percentile(own, percentile))
    distances, _ = nearest_distances(prepare(samples, 0.0), reference)
    control, _ = nearest_distances(prepare(controls, sigma), reference)
    flagged = int((distances < threshold).sum())
    own_median = float(np.median(own))
    return BlurMatchedResult(
        sigma=sigma,
        face_fraction=face_fraction,
        threshold=threshold,
        samples=len(samples),
        flagged=flagged,
        flagged_fraction=flagged / len(samples) if len(samples) else 0.0,
        ratio_median=float(np.median(distances)) / own_median if own_median > 0 else float("nan"),
        control_flagged_fraction=float((control < threshold).mean()) if len(control) else float("nan"),
    ), distances
