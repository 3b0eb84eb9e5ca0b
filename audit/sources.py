"""The faces the audit measures on: a synthetic multi-identity set and the real faces pip packages carry.

No face dataset of useful size can be downloaded here, so the audit uses (a) faces rendered by the
project's 3-D model with several images per identity (``surrogate data synth``), which allow a true
"same person, other photo" control, and (b) the real photos inside scikit-image: ``lfw_subset`` (100
LFW faces, 25x25) and ``astronaut`` (one portrait). Users pass their own dataset folder in the config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from surrogate.schema import AttributeSchema


@dataclass
class FaceSet:
    """Aligned grey face crops, one identity label each, and their attributes when known."""

    name: str
    images: list[np.ndarray]
    identities: np.ndarray
    values: np.ndarray | None  # (N, A) natural units in ``schema`` order, or None (unknown: estimate)
    schema: AttributeSchema | None


def synthetic_pairs(
    dataset_dir: str, out: Path, *, identities: int, images_per_identity: int, size: int, seed: int, progress: bool
) -> tuple[FaceSet, FaceSet, Path]:
    """(gallery, probes, folder): the first and second image of each identity of a synthetic set."""
    from surrogate.training_data import SynthDistribution, load_dataset, synthesize_dataset

    if images_per_identity < 2:
        raise ValueError("synthetic.images_per_identity must be at least 2 (gallery + probe image)")
    folder = Path(dataset_dir) if dataset_dir else out / "synthetic"
    if not dataset_dir:
        distribution = replace(SynthDistribution(), images_per_identity=images_per_identity)
        synthesize_dataset(
            folder, identities * images_per_identity, seed=seed, size=size, distribution=distribution, progress=progress
        )
    data = load_dataset(folder)
    first: dict[int, int] = {}
    second: dict[int, int] = {}
    for index, identity in enumerate(data.identities.tolist()):
        if identity not in first:
            first[identity] = index
        elif identity not in second:
            second[identity] = index
    chosen = [i for i in first if i in second][:identities] if not dataset_dir else [i for i in first if i in second]
    if len(chosen) < 2:
        raise ValueError(f"{folder}: needs at least two identities with two images each")
    gallery_rows = [first[i] for i in chosen]
    probe_rows = [second[i] for i in chosen]
    images = data.load_images(gallery_rows + probe_rows, grayscale=True)
    ids = np.asarray(chosen)
    gallery = FaceSet("synthetic", list(images[: len(chosen)]), ids, data.values[gallery_rows], data.schema)
    probes = FaceSet("synthetic", list(images[len(chosen) :]), ids, data.values[probe_rows], data.schema)
    return gallery, probes, folder


def real_faces(lfw: int, astronaut: bool, size: int = 64) -> FaceSet:
    """The real photos that scikit-image ships, as aligned grey crops, one identity each."""
    from PIL import Image
    from skimage import data

    from surrogate.face_align import align_face

    crops: list[np.ndarray] = []
    if lfw:
        faces = data.lfw_subset()[:100][:lfw]  # the first 100 images are faces, the rest are not
        for face in faces:
            pixels = np.clip(np.round(face * 255), 0, 255).astype(np.uint8)
            crops.append(np.asarray(Image.fromarray(pixels).resize((size, size), Image.BICUBIC)))
    if astronaut:
        aligned = align_face(data.astronaut(), size)
        if aligned is None:
            raise RuntimeError("no face found in skimage.data.astronaut(); the face detector is broken")
        crops.append(aligned.crop)
    return FaceSet("real", crops, np.arange(len(crops)), None, None)
