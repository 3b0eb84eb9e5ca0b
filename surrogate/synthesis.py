"""Attributes + seeds -> surrogate images, by any method, torch-free.

The in-process entry point of the CLI, batch synthesis and the annotation exporter: it picks the method
(the 3-D renderer; the GAN through ``surrogate.runtime``, where the seed becomes z; or the photoreal
portraits, ``surrogate.photoreal``, through the same runtime) and the output size and colour. A surrogate
depends only on (attributes, seed, model version): the 3-D path draws its identity from the seed, the GAN
path its noise, the photoreal path its person; no source image ever reaches this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from surrogate.model_repo import ModelRepository
from surrogate.runtime import GAN_MODEL, Backend, OnnxRuntimeBackend, default_repository, generate_images
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema

__all__ = ["DEFAULT_3D_SIZE", "DEFAULT_PHOTOREAL_SIZE", "GAN_MODEL", "METHODS", "PHOTOREAL_SIZES", "check_size",
           "default_repository", "method_schema", "photoreal_backend", "photoreal_images", "reorder",
           "resize_images", "synthesize"]

Method = Literal["gan", "3d", "photoreal"]
METHODS: tuple[str, ...] = ("gan", "3d", "photoreal")
DEFAULT_3D_SIZE = 64
# The photoreal method's sizes (area-shrunk from its 256 px framing) and default: 128 px grey, what the
# annotation export shows the crowd (``annotate publish --size 128``). At 64 px MediaPipe loses a tenth of
# its own brow and lid reading (benchmarks/reader_resolution.py), which a photo-like face need not give up.
PHOTOREAL_SIZES: tuple[int, ...] = (64, 128, 256)
DEFAULT_PHOTOREAL_SIZE = 128


@lru_cache(maxsize=4)
def _repository(path: str) -> ModelRepository:
    return ModelRepository(path)


def method_schema(method: str, repository: str | os.PathLike[str] | None = None) -> AttributeSchema:
    """The attribute schema a method expects its values in."""
    if method in ("3d", "photoreal"):
        return DEFAULT_SCHEMA
    if method == "gan":
        return _repository(str(repository or default_repository())).schema(GAN_MODEL)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def synthesize(
    method: str,
    values: np.ndarray,
    seeds: Sequence[int],
    *,
    schema: AttributeSchema | None = None,
    repository: str | os.PathLike[str] | None = None,
    size: int | None = None,
    rgb: bool = False,
    batch_size: int = 64,
    backend: Backend | None = None,
) -> np.ndarray:
    """Render one surrogate per row of ``values`` (natural units) with the matching seed.

    ``schema`` describes the columns of ``values``; it defaults to the method's own schema. ``backend`` is
    where the method's network runs (default: in this process; ``photoreal_backend()`` for photoreal, the
    repository's generator through onnxruntime for gan; the 3-D renderer has none). Returns uint8 (N, H, W)
    for grayscale or (N, H, W, 3).
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or len(values) != len(seeds):
        raise ValueError(f"need an (N, A) array and N seeds, got {values.shape} and {len(seeds)} seeds")
    target = method_schema(method, repository)
    if schema is not None and schema.names != target.names:
        values = reorder(values, schema, target)
    target.validate_array(values, source="attributes")
    if method == "3d":
        from surrogate.synthesis_3d import render_surrogates_3d

        return render_surrogates_3d(target, values, list(seeds), size=size or DEFAULT_3D_SIZE, rgb=rgb)
    if method == "photoreal":
        return photoreal_images(generate_images(backend or photoreal_backend(), values, seeds, batch_size=batch_size),
                                size=size, rgb=rgb)
    # The repository object is cached, and with it the sessions; the backend is rebuilt per call so that
    # a version added since the last call is the one used (as the manifest of a batch run says).
    generator = backend or OnnxRuntimeBackend(_repository(str(repository or default_repository())), recon_model=None)
    images = generate_images(generator, values, seeds, batch_size=batch_size)
    if rgb and images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if size is not None and images.shape[1] != size:
        images = resize_images(images, size)
    return np.ascontiguousarray(images)


@lru_cache(maxsize=4)
def photoreal_backend(triton_url: str | None = None, protocol: str = "http", timeout_s: float = 60.0):
    """One photoreal backend per process and place (compiling the networks and the mean w take seconds):
    the synthesis network in this process, or on the Triton server at ``triton_url`` (entry
    ``portrait_synthesis``, placed by ``surrogate export photoreal``)."""
    from surrogate.photoreal import PhotorealBackend, TritonPortraitRenderer

    if triton_url is None:
        return PhotorealBackend()
    return PhotorealBackend(renderer=TritonPortraitRenderer(triton_url, protocol=protocol, timeout_s=timeout_s))


def check_size(method: str, size: int | None) -> None:
    """A ValueError naming the sizes when ``method`` cannot render ``size`` (before any work starts)."""
    if method == "photoreal" and size is not None and size not in PHOTOREAL_SIZES:
        raise ValueError(f"size {size}: the photoreal method renders {list(PHOTOREAL_SIZES)} px")


def photoreal_images(images: np.ndarray, *, size: int | None = None, rgb: bool = False) -> np.ndarray:
    """The photoreal backend's (N, S, S, 3) colour framing -> (N, size, size)[, 3] (grey unless ``rgb``)."""
    from surrogate.face_align import to_gray
    from surrogate.portraits import downscale

    size = size or DEFAULT_PHOTOREAL_SIZE
    check_size("photoreal", size)
    out = [downscale(image, size) for image in images]
    if not rgb:
        out = [to_gray(image) for image in out]
    if not out:
        return np.zeros((0, size, size, 3) if rgb else (0, size, size), np.uint8)
    return np.ascontiguousarray(np.stack(out))


def reorder(values: np.ndarray, source: AttributeSchema, target: AttributeSchema) -> np.ndarray:
    """Map columns of ``values`` from ``source``'s order to ``target``'s; missing columns are an error."""
    missing = [n for n in target.names if n not in source]
    if missing:
        raise ValueError(f"the model needs attributes {missing} that the input does not have")
    return values[:, [source.index(n) for n in target.names]]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images])
