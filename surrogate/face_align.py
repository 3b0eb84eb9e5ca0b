"""Find and align faces in real photographs, torch-free, with the Haar cascades inside OpenCV's wheel.

The reconstruction network only ever saw the face model's framing (``surrogate.face_model``: an aligned
crop of the head). A real photo must be brought into the same framing: detect the face (frontal
cascades, then the profile cascade on the image and on its mirror image, since OpenCV's profile cascade
only finds faces turned one way), keep the largest, and crop a square around it whose size and centre
are mapped from the detector's box to the renderer's framing. The crop is *not* rotated: in-plane
rotation is the roll the network must measure.

Also here, because they are about the image and not the network: ``prepare_crops`` (any uint8 crops
-> the network's (N, C, S, S) uint8 input) and ``mirror_attributes`` (what a horizontal flip does to the
attributes; the extractor's confidence is the agreement of an image's estimate with its mirror's).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from surrogate.schema import AttributeSchema

# Where a detector box sits in the renderer's framing, as fractions of the crop side. Calibrated by
# running the cascades on 128 px renders (30 random identities each; docs/recon.md): frontal faces give
# box centres at y 0.477 (sd 0.009) and sides 0.733 (sd 0.022) of the crop; profile detections of
# |yaw| 45-60 degree renders give centre y 0.485 and side 0.756.
BOX_CENTRE_X = 0.5
BOX_CENTRE_Y = 0.48
BOX_SIDE = 0.73
PROFILE_SIDE = 0.75

MIN_FACE_PIXELS = 20  # a face smaller than this (in the original photo) is too small to measure
DETECT_SIDE = 256  # photos are rescaled so their shorter side is at least this before detection


class FaceAlignError(RuntimeError):
    """OpenCV or its cascades are missing."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box in image pixels, detector score (higher = surer), which cascade found it."""

    x: float
    y: float
    width: float
    height: float
    score: float
    detector: str

    @property
    def area(self) -> float:
        return self.width * self.height


@lru_cache(maxsize=1)
def _cascades() -> dict[str, object]:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FaceAlignError(
            "face detection needs OpenCV 4.x (pip install 'opencv-python-headless>=4.8,<5'); "
            "or pass --aligned for crops that are already aligned"
        ) from exc
    root = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not root:
        raise FaceAlignError("this OpenCV build ships no Haar cascades (OpenCV 5 wheels dropped them); use 4.x")
    cascades = {}
    for name, file in (("frontal", "haarcascade_frontalface_default.xml"),
                       ("frontal_alt2", "haarcascade_frontalface_alt2.xml"),
                       ("profile", "haarcascade_profileface.xml")):
        cascade = cv2.CascadeClassifier(root + file)
        if cascade.empty():
            raise FaceAlignError(f"cannot load the Haar cascade {root + file}")
        cascades[name] = cascade
    return cascades


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


def detect_faces(image: np.ndarray) -> list[FaceBox]:
    """All faces the cascades find (boxes in the input's pixel coordinates), best first."""
    import cv2

    gray = to_gray(image)
    h, w = gray.shape
    factor = max(1.0, DETECT_SIDE / min(h, w))
    if factor > 1.0:
        gray = cv2.resize(gray, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_CUBIC)
    gray = cv2.equalizeHist(gray)
    min_side = max(24, int(0.08 * min(gray.shape)))
    boxes: list[FaceBox] = []
    cascades = _cascades()
    for name in ("frontal", "frontal_alt2"):
        found, _, weights = cascades[name].detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side), outputRejectLevels=True)
        boxes += [FaceBox(*map(float, b), float(s), name) for b, s in zip(found, np.ravel(weights), strict=False)]
        if boxes:  # the second frontal cascade only when the first finds nothing (it costs as much again)
            break
    if not boxes:
        gw = gray.shape[1]
        for mirrored in (False, True):
            source = gray[:, ::-1].copy() if mirrored else gray
            found, _, weights = cascades["profile"].detectMultiScale3(
                source, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side), outputRejectLevels=True)
            for (x, y, bw, bh), s in zip(found, np.ravel(weights), strict=False):
                x = gw - x - bw if mirrored else x
                boxes.append(FaceBox(float(x), float(y), float(bw), float(bh), float(s), "profile"))
    boxes = [FaceBox(b.x / factor, b.y / factor, b.width / factor, b.height / factor, b.score, b.detector)
             for b in boxes]
    return sorted(boxes, key=lambda b: (b.area, b.score), reverse=True)


def crop_box(box: FaceBox) -> tuple[float, float, float]:
    """The square crop (centre x, centre y, side) in the renderer's framing around a detector box."""
    side = box.width / (PROFILE_SIDE if box.detector == "profile" else BOX_SIDE)
    cx = box.x + box.width / 2 + (0.5 - BOX_CENTRE_X) * side
    cy = box.y + box.height / 2 + (0.5 - BOX_CENTRE_Y) * side
    return cx, cy, side


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
    crop: np.ndarray  # uint8 size x size (grayscale)
    box: FaceBox
    faces_found: int


def align_face(image: np.ndarray, size: int = 64) -> AlignedFace | None:
    """The largest face of a photo in the renderer's framing, or None when no usable face is found."""
    gray = to_gray(image)
    boxes = [b for b in detect_faces(gray) if b.width >= MIN_FACE_PIXELS]
    if not boxes:
        return None
    best = boxes[0]
    return AlignedFace(crop_square(gray, *crop_box(best), size), best, len(boxes))


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
