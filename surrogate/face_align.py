"""Find and align faces in real-looking photographs: the one alignment and framing of the project.

Every real-looking face that enters the project goes through ``align_face``: private photos in
``surrogate attributes extract`` and the service's /extract and /anonymize, and the portrait corpus
(``surrogate.portrait_corpus``). MediaPipe's FaceLandmarker (``surrogate.landmarks``) finds the face and
its landmarks; ``landmark_frame`` turns them into an upright square, GENKI-like (the whole face with the
forehead and some hair), and ``crop_square`` cuts it. The crop is *not* rotated: in-plane rotation is the
roll to be measured. Its size comes from 3-D eye-to-eye and eye-to-mouth distances, which change little
with head turn, so a turned head is not zoomed in.

Also here, because they are about the image and not the network: ``prepare_crops`` (any uint8 crops
-> the network's (N, C, S, S) uint8 input) and ``mirror_attributes`` (what a horizontal flip does to the
attributes; the extractor's confidence is the agreement of an image's estimate with its mirror's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from surrogate.schema import AttributeSchema

if TYPE_CHECKING:
    from surrogate.landmarks import FaceLandmarks, FaceReading

MIN_FACE_PIXELS = 20  # a crop side below this (original pixels) is too small to measure

# Landmark indices of MediaPipe's 478-point mesh used for the framing.
RIGHT_EYE = (33, 133)  # the subject's right eye (image left): outer, inner corner
LEFT_EYE = (362, 263)  # inner, outer corner
MOUTH = (61, 291)  # corners
FRAME_SIDE_PER_SCALE = 1.7  # crop side / max(2 x eye-to-eye, 1.8 x eye-to-mouth), FFHQ's scale measure
FRAME_CENTRE_DOWN = 0.15  # the crop centre sits this far from the eyes towards the mouth


def landmark_frame(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the project's upright square crop, from MediaPipe landmarks (pixels)."""
    points = np.asarray(landmarks, np.float64)
    eye_r, eye_l = points[list(RIGHT_EYE)].mean(0), points[list(LEFT_EYE)].mean(0)
    eyes, mouth = (eye_r + eye_l) / 2, points[list(MOUTH)].mean(0)
    scale = max(np.linalg.norm(eye_l - eye_r) * 2.0, np.linalg.norm(mouth - eyes) * 1.8)
    centre = eyes[:2] + FRAME_CENTRE_DOWN * (mouth[:2] - eyes[:2])
    return float(centre[0]), float(centre[1]), float(FRAME_SIDE_PER_SCALE * scale)


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 HxW or HxWx3 (RGB) -> HxW, with the same luma weights as PIL's "L" (ITU-R 601)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.uint8, copy=False)
    if image.ndim == 3 and image.shape[2] == 3:
        luma = image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0].astype(np.uint8, copy=False)
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def crop_square(image: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Cut a square (edges replicated where it leaves the image) and resize it to size x size."""
    import cv2

    scale = size / side
    # Affine map from the image to the crop: translate the square's corner to 0, then scale.
    matrix = np.array([[scale, 0.0, -(cx - side / 2) * scale], [0.0, scale, -(cy - side / 2) * scale]])
    source = image
    if scale < 0.5:  # pre-shrink so the bilinear warp does not alias
        shrink = scale * 2
        source = cv2.resize(image, (max(1, round(image.shape[1] * shrink)), max(1, round(image.shape[0] * shrink))),
                            interpolation=cv2.INTER_AREA)
        matrix[:, :2] /= shrink
    return cv2.warpAffine(source, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class AlignedFace:
    crop: np.ndarray  # uint8 size x size (grey) or size x size x 3
    reading: FaceReading  # the landmarks, pose and blendshapes MediaPipe read on the whole image
    frame: tuple[float, float, float]  # centre x, centre y, side of the crop in the image's pixels


_READER: FaceLandmarks | None = None


def default_reader() -> FaceLandmarks:
    """One FaceLandmarker per process (loading the model takes ~0.1 s)."""
    global _READER
    if _READER is None:
        from surrogate.landmarks import FaceLandmarks

        _READER = FaceLandmarks()
    return _READER


def release_reader() -> None:
    """Close the process's FaceLandmarker (MediaPipe complains when one is left to interpreter teardown)."""
    global _READER
    if _READER is not None:
        _READER.close()
        _READER = None


def align_face(image: np.ndarray, size: int = 64, *, channels: int = 1,
               reader: FaceLandmarks | None = None) -> AlignedFace | None:
    """The largest face of a photo in the project's framing, or None when no face is found.

    ``AlignedFace.frame[2]`` (the crop side in the photo's pixels) tells how small the face was.
    """
    reading = (reader or default_reader()).read(image)
    if reading is None:
        return None
    frame = landmark_frame(reading.landmarks)
    source = to_gray(image) if channels == 1 else _rgb(image)
    return AlignedFace(crop_square(source, *frame, size), reading, frame)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def prepare_crops(images: np.ndarray | list[np.ndarray], size: int, channels: int = 1) -> np.ndarray:
    """Already-aligned crops of any size (uint8 HxW / HxWx3, or a stacked array) -> (N, C, S, S) uint8.

    The one preprocessing of the network's input, shared by the torch estimator and the ONNX path.
    """
    from PIL import Image

    if isinstance(images, np.ndarray) and images.ndim in (2,):
        images = images[None]
    out = np.empty((len(images), channels, size, size), np.uint8)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected uint8 pixels, got {image.dtype}")
        if channels == 1:
            pil = Image.fromarray(to_gray(image))
        else:
            pil = Image.fromarray(image if image.ndim == 3 else np.repeat(image[..., None], 3, 2))
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
        array = np.asarray(pil, dtype=np.uint8)
        out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return out


def mirror_attributes(schema: AttributeSchema, values: np.ndarray) -> np.ndarray:
    """Attributes of the horizontally mirrored face: yaw and roll change sign; pitch, AUs, gender do not.

    (The face model's AUs are bilateral, so a mirrored face shows the same intensities.)
    """
    values = np.array(values, dtype=np.float32, copy=True)
    for name in ("yaw", "roll"):
        if name in schema:
            values[..., schema.index(name)] *= -1
    return values


def agreement_confidence(schema: AttributeSchema, estimate: np.ndarray, mirrored_estimate: np.ndarray,
                         tolerance: float = 0.05) -> np.ndarray:
    """Per-image confidence in (0, 1]: exp(-d / tolerance), d = mean normalised disagreement between the
    estimate of an image and the un-mirrored estimate of its mirror image. A face the network reads
    consistently scores near 1; a non-face, a bad crop or an out-of-distribution photo scores low."""
    a = schema.normalise(estimate)
    b = schema.normalise(mirror_attributes(schema, mirrored_estimate))
    disagreement = np.abs(a - b).mean(axis=-1)
    return np.exp(-disagreement / tolerance).astype(np.float32)
