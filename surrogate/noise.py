"""The one definition of the randomness of a surrogate: noise and identity from an integer seed.

A surrogate depends only on (attributes, seed, model version). The HTTP service, the Python and
gRPC clients, batch synthesis and the annotation exporter all call these functions, so the same seed
gives the same image wherever it is computed. Each purpose draws from its own stream
(``SeedSequence([seed, STREAM])``) so that, e.g., the 3-D identity never correlates with GAN noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Z_DIM = 64
MAX_SEED = 2**63 - 1

_STREAM_GAN_Z = 0
_STREAM_IDENTITY = 1
_STREAM_SCENE = 2
STREAM_PORTRAIT_Z = 3  # the portrait generator's 512-d normal z (surrogate.portraits)
# Streams of the synthetic training data (surrogate.training_data) and the annotation tools (annotation/).
STREAM_SYNTH_ROW = 101
STREAM_SYNTH_IDENTITY = 102
STREAM_TASK_ORDER = 1001
STREAM_SUBSAMPLING = 1002
STREAM_CROWD_SIMULATION = 1003


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    return int(seed)


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([check_seed(seed), stream])))


def indexed_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Randomness of item ``index`` of a seeded collection (a dataset row, an identity)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([check_seed(seed), stream, index])))


def z_from_seed(seed: int, dim: int = Z_DIM) -> np.ndarray:
    """The generator's noise for one image: float32 U(-1, 1)^dim."""
    return rng_for(seed, _STREAM_GAN_Z).uniform(-1.0, 1.0, size=dim).astype(np.float32)


def z_batch(seeds: Sequence[int], dim: int = Z_DIM) -> np.ndarray:
    return np.stack([z_from_seed(s, dim) for s in seeds]) if len(seeds) else np.zeros((0, dim), np.float32)


def identity_from_seed(seed: int, dim: int) -> np.ndarray:
    """Identity (shape) coefficients of a 3-D surrogate: standard normal, float32."""
    return rng_for(seed, _STREAM_IDENTITY).standard_normal(dim).astype(np.float32)


def scene_rng(seed: int) -> np.random.Generator:
    """Randomness for anything else a 3-D surrogate draws (skin tone, lighting jitter)."""
    return rng_for(seed, _STREAM_SCENE)


def record_seed(seed: int, row: int, n: int) -> int:
    """Seed of the first of the n surrogates of record ``row`` in a request or file with base ``seed``.

    Record r, copy k uses ``seed + r*n + k`` everywhere (service, clients, synthesize, batch), so a
    row's images do not depend on how the rows are batched or sharded.
    """
    first = check_seed(seed) + row * n
    if first + n - 1 > MAX_SEED:
        raise ValueError(f"seed {seed} with row {row} and n {n} exceeds the largest seed {MAX_SEED}")
    return first


def row_seed(seed: int, row: int, k: int, n: int) -> int:
    """Seed of surrogate k of record (or file row) ``row``: stable across reruns and independent of other rows."""
    return record_seed(seed, row, n) + k


def record_seeds(seed: int, records: int, n: int) -> list[int]:
    """Seeds of every image of ``records`` records with n copies each, record-major."""
    return expand_seeds([record_seed(seed, r, n) for r in range(records)], n)


def expand_seeds(first_seeds: Sequence[int], n: int) -> list[int]:
    """Seeds of every image of records whose first seeds are given (n copies each), record-major."""
    return [s for first in first_seeds for s in image_seeds(first, n)]


def image_seeds(seed: int, n: int) -> list[int]:
    """Seeds of the n surrogates requested for one record with ``seed``: seed, seed+1, ..."""
    check_seed(seed)
    if seed + n - 1 > MAX_SEED:
        raise ValueError(f"seed {seed} + n {n} exceeds the largest seed {MAX_SEED}")
    return [seed + i for i in range(n)]
