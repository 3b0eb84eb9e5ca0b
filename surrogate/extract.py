"""Attributes of real face images (the library behind ``surrogate attributes extract``).

Every input image gets exactly one row: ``id,file,<schema names>,status,confidence``. Only rows with
status ``ok`` carry values; an image that cannot be read (``unreadable``), where no face is found
(``no_face``) or whose face is too small (``face_too_small``) gets that status and empty values, never
a guess. ``confidence`` is the agreement of the estimate with that of the mirrored image (see
``surrogate.face_align.agreement_confidence``): low values flag faces that are read inconsistently.

Faces are found and framed by ``surrogate.face_align.align_face`` (MediaPipe landmarks). Two extractors:
- ``recon`` (default): the reconstruction network on the aligned crop, either a torch checkpoint of
  ``surrogate train recon`` (``.pt``; needs torch) or a model repository folder (onnxruntime only);
- ``mediapipe``: head pose and AUs from MediaPipe FaceLandmarker (``surrogate.landmarks``), which this
  project did not train; gender, which MediaPipe does not read, from the reconstruction network.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

# click only for its error type: load_any_estimator and collect_images serve three commands (attributes
# extract, evaluate gan, audit), and their messages name the command's option.
import click
import numpy as np

from surrogate.face_align import (
    MIN_FACE_PIXELS,
    agreement_confidence,
    align_face,
    mirror_attributes,
    prepare_crops,
    to_gray,
)
from surrogate.imageio import ImageDecodeError, load_image
from surrogate.schema import AttributeSchema

if TYPE_CHECKING:
    from surrogate.landmarks import FaceReading

EXTRACTORS = ("recon", "mediapipe")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm"})
RECON_MODEL = "recon"
STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_UNREADABLE = "unreadable"
STATUS_TOO_SMALL = "face_too_small"


class Estimator(Protocol):
    schema: AttributeSchema

    def predict_with_confidence(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


class OnnxEstimator:
    """The ``recon`` model of a model repository, run with onnxruntime (no torch)."""

    def __init__(self, repository: str | os.PathLike[str], version: int | None = None, *, mirror: bool = True):
        from surrogate.model_repo import ModelRepository

        repo = ModelRepository(repository)
        self.model = repo.session(RECON_MODEL, version)
        self.schema = self.model.schema or repo.schema(RECON_MODEL)
        image = next((s for s in self.model.inputs if s.name == "image"), self.model.inputs[0])
        self.input_name = image.name
        self.channels, self.image_size = int(image.shape[1]), int(image.shape[2])
        self.mirror = mirror

    def _run(self, crops: np.ndarray, batch: int = 256) -> np.ndarray:
        parts = [self.model.run({self.input_name: crops[i:i + batch]})["attributes"]
                 for i in range(0, len(crops), batch)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, len(self.schema)), np.float32)

    def predict_with_confidence(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        crops = prepare_crops(list(images), self.image_size, self.channels)
        values = self._run(crops)
        confidence = np.ones(len(crops), np.float32)
        if self.mirror and len(crops):
            mirrored = self._run(np.ascontiguousarray(crops[..., ::-1]))
            confidence = agreement_confidence(self.schema, values, mirrored)
            values = (values + mirror_attributes(self.schema, mirrored)) / 2
        return self.schema.clip(values), confidence

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict_with_confidence(images)[0]


# Torch checkpoint loaders register under this entry-point group (pyproject.toml: training.recon.estimator),
# so the torch-free core reads a checkpoint without importing the training code above it.
CHECKPOINT_ESTIMATORS = "surrogate.checkpoint_estimators"


def checkpoint_loader():  # noqa: ANN201 - (path, device) -> Estimator, from whichever package registered one
    """The registered torch-checkpoint estimator loader; ImportError when none is installed (or no torch)."""
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=CHECKPOINT_ESTIMATORS), key=lambda point: point.name)
    if not found:
        raise ImportError(f"no package registers a '{CHECKPOINT_ESTIMATORS}' entry point")
    return found[0].load()


def load_any_estimator(model: str | os.PathLike[str], *, device: str = "cpu", option: str = "--model") -> Estimator:
    """A torch checkpoint file (lazy torch import) or a model repository folder (onnxruntime); errors
    name ``option``, the command-line option the path came from."""
    path = Path(model)
    if path.is_dir():
        return OnnxEstimator(path)
    if path.is_file():
        try:
            load_estimator = checkpoint_loader()
        except ImportError as exc:
            raise click.ClickException(
                f"{path}: reading a torch checkpoint needs torch (pip install 'surrogate-faces[train]'); "
                f"or pass a model repository folder ({exc})") from exc
        try:
            return load_estimator(path, device)
        except ValueError as exc:  # CheckpointError: not a reconstruction checkpoint
            raise click.ClickException(str(exc)) from exc
    raise click.ClickException(f"{option} {path}: no such checkpoint file or model repository folder")


def collect_images(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given (any suffix: an unreadable one gets its status) and image files under folders."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            raise click.ClickException(f"{path}: no such file or folder")
    return found


def unique_ids(paths: Sequence[Path]) -> list[str]:
    """Image file stems; where two stems collide, the path without suffix keeps them apart."""
    stems = [p.stem for p in paths]
    counts = {s: stems.count(s) for s in stems}
    return [p.stem if counts[p.stem] == 1 else p.with_suffix("").as_posix() for p in paths]


@dataclass
class ExtractionRow:
    id: str
    file: str
    status: str
    values: np.ndarray | None = None
    confidence: float | None = None


class MediaPipeExtractor:
    """Pose and AUs read by MediaPipe on the whole image (and its mirror, for the confidence); gender from
    the reconstruction network on the aligned crop. ``schema`` is the reconstruction network's."""

    def __init__(self, recon: Estimator) -> None:
        from surrogate.face_align import default_reader

        self.recon = recon
        self.schema = recon.schema
        self.reader = default_reader()

    def values(self, reading: FaceReading | None) -> np.ndarray:
        """Schema-ordered values of one MediaPipe reading (gender NaN); all NaN without a face."""
        if reading is None:
            return np.full(len(self.schema), np.nan, np.float32)
        return reading.array(self.schema.names)

    def estimate(self, images: Sequence[np.ndarray], readings: Sequence[FaceReading],
                 crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Values and mirror-agreement confidence from each image's reading (made once, by the alignment)."""
        values = np.stack([self.values(reading) for reading in readings])
        mirrored = np.stack([self.values(self.reader.read(np.ascontiguousarray(np.asarray(image)[:, ::-1])))
                             for image in images])
        unread = np.isnan(mirrored[:, 0])  # no face in the mirror image: no agreement to speak of
        gender, _ = self.recon.predict_with_confidence(list(crops))
        missing = np.isnan(values)
        values[missing] = gender[missing]  # the attributes MediaPipe does not read (gender)
        mirrored = np.where(np.isnan(mirrored), mirror_attributes(self.schema, values), mirrored)
        confidence = np.where(unread, 0.0, agreement_confidence(self.schema, values, mirrored)).astype(np.float32)
        return self.schema.clip((values + mirror_attributes(self.schema, mirrored)) / 2), confidence


def extract_attributes(paths: Sequence[Path], estimator: Estimator, *, aligned: bool = False,
                       extractor: str = "recon", show_progress: bool = True) -> list[ExtractionRow]:
    """One row per path, in order: read, detect and align (unless ``aligned``), estimate."""
    from tqdm import tqdm

    size = int(getattr(estimator, "image_size", 64))
    channels = int(getattr(estimator, "channels", 1))
    mediapipe = MediaPipeExtractor(estimator) if extractor == "mediapipe" else None
    rows: list[ExtractionRow] = []
    crops: list[np.ndarray] = []
    faces: list[np.ndarray] = []  # what MediaPipe reads: the whole image (or the given crop)
    readings: list[FaceReading | None] = []
    crop_rows: list[int] = []
    for path, image_id in tqdm(list(zip(paths, unique_ids(paths), strict=True)), desc="detect faces",
                               unit="img", disable=not show_progress):
        row = ExtractionRow(image_id, str(path), STATUS_OK)
        rows.append(row)
        try:
            image = load_image(path)
        except ImageDecodeError:
            row.status = STATUS_UNREADABLE
            continue
        if aligned:
            crop = to_gray(image) if channels == 1 else image
            reading = mediapipe.reader.read(image) if mediapipe is not None else None
            if mediapipe is not None and reading is None:
                row.status = STATUS_NO_FACE
                continue
        else:
            face = align_face(image, size, channels=channels)
            if face is None or face.frame[2] < MIN_FACE_PIXELS:
                row.status = STATUS_NO_FACE if face is None else STATUS_TOO_SMALL
                continue
            crop, reading = face.crop, face.reading
        crops.append(crop)
        faces.append(image)
        readings.append(reading)
        crop_rows.append(len(rows) - 1)
    if crops:
        if mediapipe is not None:
            values, confidence = mediapipe.estimate(faces, readings, crops)
        else:
            values, confidence = estimator.predict_with_confidence(crops)
        for i, row_index in enumerate(crop_rows):
            rows[row_index].values = values[i]
            rows[row_index].confidence = float(confidence[i])
    return rows


def rows_to_csv(rows: Sequence[ExtractionRow], schema: AttributeSchema) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "file", *schema.names, "status", "confidence"])
    for row in rows:
        values = [f"{v:.4f}" for v in row.values] if row.values is not None else [""] * len(schema)
        confidence = f"{row.confidence:.4f}" if row.confidence is not None else ""
        writer.writerow([row.id, row.file, *values, row.status, confidence])
    return buffer.getvalue()
