"""Linear models in the portrait generator's w space: a gender boundary and the attribute directions.

- Gender (InterFaceGAN-style): an L2-regularised logistic regression of hand labels on w, so p(male)
  of a portrait is ``sigmoid(w . a + b)``. The labels are people's judgements of contact sheets
  (docs/portraits_gender_labels.csv), never the generator's or a classifier's.
- Attributes: a ridge read-out ``y ~ R w + c`` of the extractor's readings (MediaPipe pose and AUs, the
  gender boundary) over the labelled corpus. The directions are the read-out's pseudo-inverse
  ``D = R^T (R R^T)^-1``: a step of t along direction k moves the read-out of attribute k by t and of every
  other attribute by 0, the smallest change of w that does so. This conditions each direction on the
  others (a smile edit that keeps the read-out of gender, pose and brows), which the plain per-attribute
  regression vectors do not.

The model file (``.npz``) holds names, readout, intercept, vectors (D^T), and the corpus edit spread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from surrogate.imageio import atomic_open
from surrogate.stats import auc


class DirectionsError(ValueError):
    """A labels or model file that cannot be used."""


# The corpus's edits, in read-out units per standard-normal draw (spread) plus a mean (shift). A step of 1
# moves MediaPipe's reading by only 0.3 (yaw) to 0.6 (AU12) of a unit (the gain, measured by
# benchmarks/portrait_directions.py), so the spreads are wide: about 12 degrees of real yaw, 1.4 AU of brow
# lowering (shifted up, since natural faces rarely frown) and 1.7 AU of smile per draw.
EDIT_SPREAD = {"yaw": 40.0, "pitch": 12.0, "AU04": 3.0, "AU05": 1.0, "AU07": 1.5, "AU12": 3.0, "AU23": 1.5,
               "gender": 0.0}
EDIT_SHIFT = {"AU04": 1.5}
# AU06 has no direction of its own: MediaPipe's AU06 is a function of AU07 and AU12 (surrogate.landmarks).
DIRECTION_NAMES = ("yaw", "pitch", "AU04", "AU05", "AU07", "AU12", "AU23", "gender")


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method on standardised-free inputs: (weights, bias)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-design @ theta))
        gradient = design.T @ (p - y) + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1].astype(np.float32), float(theta[-1])


@dataclass(frozen=True)
class GenderBoundary:
    weights: np.ndarray
    bias: float

    def probability(self, w: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-(np.asarray(w, np.float64) @ self.weights + self.bias)))).astype(np.float32)

    def save(self, path: str | os.PathLike[str], **info: object) -> None:
        with atomic_open(path) as handle:
            np.savez(handle, weights=self.weights, bias=np.float32(self.bias),
                     **{k: np.asarray(v) for k, v in info.items()})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GenderBoundary:
        try:
            with np.load(path) as data:
                return cls(np.asarray(data["weights"], np.float32), float(data["bias"]))
        except (OSError, KeyError, ValueError) as exc:
            raise DirectionsError(f"{path}: not a gender boundary file ({exc})") from exc


def cross_validated_gender(w: np.ndarray, labels: np.ndarray, l2: float, folds: int = 5,
                           seed: int = 0) -> tuple[float, float]:
    """Held-out (accuracy, AUC) of the logistic boundary over ``folds`` folds."""
    order = np.random.default_rng(seed).permutation(len(labels))
    scores = np.zeros(len(labels))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        weights, bias = fit_logistic(w[train], labels[train], l2)
        scores[test] = w[test] @ weights + bias
    return float(((scores > 0) == labels.astype(bool)).mean()), auc(scores, labels)


def read_gender_labels(path: str | os.PathLike[str]) -> dict[int, int]:
    """``row,label`` CSV (label m or f, u for cannot tell: skipped) -> {corpus row: 1 male / 0 female}."""
    import csv

    labels: dict[int, int] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for line, record in enumerate(csv.DictReader(handle), start=2):
            try:
                row, label = int(record["row"]), record["label"].strip().lower()
            except (KeyError, TypeError, ValueError) as exc:
                raise DirectionsError(f"{path}:{line}: need columns row,label ({exc})") from exc
            if label not in ("m", "f", "u"):
                raise DirectionsError(f"{path}:{line}: label must be m, f or u, got {label!r}")
            if label != "u":
                labels[row] = int(label == "m")
    return labels


@dataclass(frozen=True)
class AttributeDirections:
    names: tuple[str, ...]
    readout: np.ndarray  # (K, 512): y ~ readout @ w + intercept
    intercept: np.ndarray  # (K,)
    vectors: np.ndarray  # (K, 512): the conditioned directions, readout @ vectors.T = I
    spread: np.ndarray  # (K,) the corpus's edit spread, attribute units per standard-normal draw
    shift: np.ndarray  # (K,) the corpus's mean edit, attribute units

    def predict(self, w: np.ndarray) -> np.ndarray:
        return np.asarray(w, np.float32) @ self.readout.T + self.intercept

    def edit(self, w: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The smallest change of w (per row) that sets the read-out to ``target`` (N, K)."""
        return (np.asarray(w, np.float32) + (np.asarray(target, np.float32) - self.predict(w)) @ self.vectors)

    def save(self, path: str | os.PathLike[str], **info: object) -> None:
        with atomic_open(path) as handle:
            np.savez(handle, names=np.array(self.names), readout=self.readout, intercept=self.intercept,
                     vectors=self.vectors, spread=self.spread, shift=self.shift,
                     **{k: np.asarray(v) for k, v in info.items()})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AttributeDirections:
        try:
            with np.load(path) as data:
                return cls(tuple(str(n) for n in data["names"]), *(np.asarray(data[k], np.float32) for k in
                                                                   ("readout", "intercept", "vectors", "spread",
                                                                    "shift")))
        except (OSError, KeyError, ValueError) as exc:
            raise DirectionsError(f"{path}: not an attribute directions file ({exc})") from exc


def fit_readout(w: np.ndarray, y: np.ndarray, l2: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression y ~ R w + c per column of y: (R (K, 512), c (K,))."""
    w = np.asarray(w, np.float64)
    y = np.asarray(y, np.float64)
    w_mean, y_mean = w.mean(0), y.mean(0)
    wc, yc = w - w_mean, y - y_mean
    gram = wc.T @ wc + l2 * np.eye(w.shape[1])
    readout = np.linalg.solve(gram, wc.T @ yc).T
    return readout.astype(np.float32), (y_mean - readout @ w_mean).astype(np.float32)


def conditioned_directions(readout: np.ndarray, penalty: np.ndarray | None = None) -> np.ndarray:
    """(K, 512) directions V with readout @ V.T = I: the smallest steps that move one read-out each.

    Smallest in the metric ``|dw|^2 + |penalty @ dw|^2``: without ``penalty`` the pseudo-inverse's rows; with
    it (rows: a linear model of what the step should leave alone, e.g. identity), ``M^-1 R^T (R M^-1 R^T)^-1``
    with ``M = I + penalty^T penalty``, so a step moves the read-out exactly as much and that model less.
    """
    r = np.asarray(readout, np.float64)
    metric_inverse = np.eye(r.shape[1])
    if penalty is not None:
        p = np.asarray(penalty, np.float64)
        metric_inverse = np.linalg.inv(np.eye(r.shape[1]) + p.T @ p)
    return (metric_inverse @ r.T @ np.linalg.inv(r @ metric_inverse @ r.T)).T.astype(np.float32)


def boundary_gender_vector(directions: AttributeDirections, boundary: GenderBoundary) -> np.ndarray:
    """Gender's step (512,) along the gender boundary's normal: the normal less its part in the span of the
    other read-outs (so the step leaves their read-outs alone), scaled to move gender's read-out by 1.

    The conditioned direction (``conditioned_directions``, the smallest step that moves the linear read-out
    of the boundary's probability) lies at only ~60 degrees from the normal, and half of its length goes
    into parts of w that move that read-out but not what a face looks like; the normal, which the labels
    themselves fitted, changes how male or female a face looks about 1.75 times as much per unit of edit
    (docs/photoreal.md, "Gender along the boundary's normal").
    """
    k = directions.names.index("gender")
    others = np.delete(np.asarray(directions.readout, np.float64), k, axis=0)
    normal = np.asarray(boundary.weights, np.float64)
    normal = normal - others.T @ np.linalg.solve(others @ others.T, others @ normal)
    per_unit = float(np.asarray(directions.readout[k], np.float64) @ normal)
    if not abs(per_unit) > 1e-9:
        raise DirectionsError("the gender boundary's normal does not move gender's read-out")
    return (normal / per_unit).astype(np.float32)


def with_vector(directions: AttributeDirections, name: str, vector: np.ndarray) -> AttributeDirections:
    """``directions`` with ``name``'s step replaced (read-outs, spreads and shifts kept)."""
    vectors = np.array(directions.vectors, np.float32, copy=True)
    vectors[directions.names.index(name)] = vector
    return AttributeDirections(directions.names, directions.readout, directions.intercept, vectors,
                               directions.spread, directions.shift)


def fit_directions(w: np.ndarray, y: np.ndarray, names: tuple[str, ...], spread: np.ndarray, shift: np.ndarray,
                   l2: float = 10.0) -> AttributeDirections:
    readout, intercept = fit_readout(w, y, l2)
    return AttributeDirections(tuple(names), readout, intercept, conditioned_directions(readout),
                               np.asarray(spread, np.float32), np.asarray(shift, np.float32))


def held_out_r(w: np.ndarray, y: np.ndarray, l2: float = 10.0, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Pearson r of the read-out on a held-out share of rows, per attribute."""
    order = np.random.default_rng(seed).permutation(len(w))
    test, train = order[: int(len(w) * fraction)], order[int(len(w) * fraction):]
    readout, intercept = fit_readout(w[train], y[train], l2)
    predicted = w[test] @ readout.T + intercept
    return np.array([np.corrcoef(predicted[:, k], y[test, k])[0, 1] for k in range(y.shape[1])])
