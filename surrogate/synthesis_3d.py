"""3-D surrogates: render a face with given attributes and an identity that comes only from a seed.

This is the paper's 3-D path without a per-person reconstruction: the surrogate carries the measured
attributes (pose, action units, gender) and nothing else of the source face. The function takes no
identity, no image and no lighting of the source at all, so no source identity can reach the pixels:
the identity coefficients come from ``noise.identity_from_seed(seed, N_IDENTITY)``, skin and hair tone
from ``noise.scene_rng(seed)``, and the lighting is a fixed neutral studio set-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from surrogate import noise
from surrogate.face_model import N_IDENTITY, FaceParams, params_from_attributes
from surrogate.render import FACE_MODEL_3D, RENDERER_VERSION, render_batch
from surrogate.schema import AttributeSchema

FACE_MODELS: tuple[str, ...] = ("parametric", "ict")
# The scanned ICT-FaceKit head since it met issue 21's read-back targets (docs/face_model.md); the hand-built
# parametric head stays selectable for comparison.
DEFAULT_FACE_MODEL = "ict"
# The ICT model's backdrop: a plain grey level drawn from the seed in this range (0..1).
ICT_BACKGROUND_RANGE = (0.55, 0.9)

# Fixed neutral studio lighting for every 3-D surrogate: soft key light slightly above the camera.
STUDIO_LIGHT: dict[str, float] = {
    "light_azimuth": 0.0,
    "light_elevation": 20.0,
    "light_strength": 0.7,
    "ambient": 0.35,
}
STUDIO_BACKGROUND = 0.78


def check_face_model(face_model: str) -> str:
    if face_model not in FACE_MODELS:
        raise ValueError(f"face_model must be one of {', '.join(FACE_MODELS)}, got {face_model!r}")
    return face_model


def model_version(face_model: str = DEFAULT_FACE_MODEL) -> tuple[str, str]:
    """(name, version) a 3-D surrogate drawn by ``face_model`` is recorded under."""
    if check_face_model(face_model) == "ict":
        from surrogate.ict_model import FACE_MODEL_ICT, ICT_MODEL_VERSION

        return FACE_MODEL_ICT, ICT_MODEL_VERSION
    return FACE_MODEL_3D, RENDERER_VERSION


def render_params(params: Sequence[FaceParams], size: int, model: str = DEFAULT_FACE_MODEL,
                  **options: Any) -> np.ndarray:
    """Render ``FaceParams`` with the face model ``model`` (one of ``FACE_MODELS``) -> uint8 (N, size, size)[, 3];
    ``options`` (``rgb``, ``backgrounds``, ``supersample``) as for ``surrogate.render.render_batch``. The one
    place a face model's name picks its renderer (surrogates, synthetic datasets, recon training data)."""
    if check_face_model(model) == "ict":
        from surrogate.ict_model import render_ict_batch

        return render_ict_batch(params, size, **options)
    return render_batch(params, size, **options)


def surrogate_params(schema: AttributeSchema, values: np.ndarray, seed: int) -> FaceParams:
    """FaceParams of one 3-D surrogate: the row's attributes + a seed-derived identity and tone."""
    identity = noise.identity_from_seed(seed, N_IDENTITY)
    scene = noise.scene_rng(seed)
    skin, hair = (float(v) for v in scene.uniform(0.0, 1.0, size=2))
    return params_from_attributes(schema, values, identity=identity, skin=skin, hair=hair, **STUDIO_LIGHT)


def render_surrogates_3d(
    schema: AttributeSchema,
    values: np.ndarray,
    seeds: Sequence[int],
    size: int = 64,
    rgb: bool = False,
    model: str = DEFAULT_FACE_MODEL,
) -> np.ndarray:
    """Render N surrogates -> uint8 (N, size, size)[, 3].

    ``values``: (N, A) attributes in natural units, schema order; ``seeds``: one integer per row.
    Equal (attributes, seed, model) give identical pixels whatever face the attributes were measured
    on. ``model``: the face model, one of ``FACE_MODELS`` (named so because the attributes-only audit
    flags entry-point parameters that mention faces); the ICT model also draws its backdrop's grey level
    from the seed.
    """
    check_face_model(model)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != len(schema):
        raise ValueError(f"values must have shape (N, {len(schema)}) for schema {list(schema.names)}, "
                         f"got {values.shape}")
    seeds = list(seeds)
    if len(seeds) != len(values):
        raise ValueError(f"got {len(seeds)} seeds for {len(values)} attribute rows")
    params = [surrogate_params(schema, row, noise.check_seed(seed)) for row, seed in zip(values, seeds, strict=True)]
    if model == "ict":
        # Drawn after skin and hair, so both models give a seed the same tones.
        draws = [float(noise.scene_rng(seed).uniform(0.0, 1.0, size=3)[2]) for seed in seeds]
        low, high = ICT_BACKGROUND_RANGE
        backgrounds = [low + (high - low) * b for b in draws]
    else:
        backgrounds = [STUDIO_BACKGROUND] * len(params)
    return render_params(params, size, model, rgb=rgb, backgrounds=backgrounds)
