"""Training data for the GAN, preloaded into memory as one uint8 tensor.

Two sources: the project's synthetic dataset (contract 2, ``surrogate.training_data.load_dataset``) or any folder
of face images plus an attribute file in any adapter format (``surrogate.adapters.read_attributes``),
rows matched to images by the ``file`` column, by file stem, or by OpenFace frame number. Images are
centre-cropped to a square and resized to the model size; unreadable or missing images are reported by
name and skipped, never fatal unless nothing is left. Small images fit in memory (18k x 64 x 64 = 74 MB),
which removes the data loader from the training step entirely (and lets the whole set live on the GPU).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from surrogate.imageio import ImageDecodeError, load_image
from surrogate.schema import AttributeSchema

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset that cannot be used at all (missing folder, no usable rows)."""


@dataclass
class FaceDataset:
    """Images (N, C, S, S) uint8, attributes (N, A) in natural units, identity group per row."""

    schema: AttributeSchema
    images: np.ndarray
    values: np.ndarray
    identities: np.ndarray
    names: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def normalised(self) -> np.ndarray:
        return np.clip(self.schema.normalise(self.values), 0.0, 1.0).astype(np.float32)

    def subset(self, index: np.ndarray) -> FaceDataset:
        return FaceDataset(
            self.schema,
            self.images[index],
            self.values[index],
            self.identities[index],
            [self.names[i] for i in index],
            self.skipped,
        )


def prepare_image(path: Path, size: int, channels: int) -> np.ndarray:
    """Read, centre-crop to a square, resize to ``size``: (C, size, size) uint8."""
    array = load_image(path, grayscale=channels == 1)
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    array = array[top : top + side, left : left + side]
    if side != size:
        image = Image.fromarray(array)
        array = np.asarray(
            image.resize((size, size), Image.Resampling.BILINEAR if side < size else Image.Resampling.BOX)
        )
    return array[None] if array.ndim == 2 else np.transpose(array, (2, 0, 1))


def _load_images(
    paths: list[Path | None], names: list[str], size: int, channels: int, desc: str
) -> tuple[np.ndarray, list[int], list[str]]:
    images, kept, skipped = [], [], []
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", leave=False, disable=len(paths) < 500)):
        if path is None:
            skipped.append(f"{names[i]}: no image file found")
            continue
        try:
            images.append(prepare_image(path, size, channels))
            kept.append(i)
        except ImageDecodeError as exc:
            skipped.append(str(exc))
    stacked = np.stack(images) if images else np.zeros((0, channels, size, size), np.uint8)
    return stacked, kept, skipped


def load_synthetic(path: Path, size: int, channels: int) -> FaceDataset:
    from surrogate.training_data import load_dataset

    data = load_dataset(path)
    files = [Path(f) for f in data.files]
    names = [str(i) for i in data.ids]
    images, kept, skipped = _load_images(
        [f if f.is_file() else None for f in files], names, size, channels, f"loading {path.name}"
    )
    kept_idx = np.asarray(kept, dtype=np.int64)
    return FaceDataset(
        data.schema,
        images,
        np.asarray(data.values, np.float32)[kept_idx],
        np.asarray(data.identities)[kept_idx].astype(np.int64),
        [names[i] for i in kept],
        skipped,
    )


def _frame_number(stem: str) -> int | None:
    match = re.search(r"(\d+)$", stem)
    return int(match.group(1)) if match else None


def match_images(folder: Path, ids: list[str], files: list[str | None], base: Path) -> list[Path | None]:
    """Find each row's image: the ``file`` column (relative to the attribute file or the image folder),
    else an image whose stem equals the id, else (OpenFace videos) the image whose trailing frame
    number equals the numeric id, when that number is unique in the folder."""
    candidates = [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    by_stem: dict[str, Path] = {}
    by_frame: dict[int, list[Path]] = {}
    for p in candidates:
        by_stem.setdefault(p.stem, p)
        number = _frame_number(p.stem)
        if number is not None:
            by_frame.setdefault(number, []).append(p)
    out: list[Path | None] = []
    for row_id, file in zip(ids, files, strict=True):
        found: Path | None = None
        if file:
            for root in (base, folder):
                candidate = (root / file) if not Path(file).is_absolute() else Path(file)
                if candidate.is_file():
                    found = candidate
                    break
            if found is None:
                found = by_stem.get(Path(file).stem)
        if found is None:
            found = by_stem.get(str(row_id))
        if found is None and str(row_id).strip().isdigit():
            hits = by_frame.get(int(str(row_id).strip()), [])
            found = hits[0] if len(hits) == 1 else None
        out.append(found)
    return out


def load_image_folder(
    folder: Path,
    attributes: Path,
    *,
    fmt: str,
    schema: AttributeSchema | None,
    min_confidence: float,
    size: int,
    channels: int,
) -> FaceDataset:
    from surrogate.adapters import read_attributes

    kwargs = {"format": fmt, "min_confidence": min_confidence}
    if schema is not None:
        kwargs["schema"] = schema
    table = read_attributes(attributes, **kwargs)
    paths = match_images(folder, list(table.ids), list(table.files), attributes.parent)
    images, kept, skipped = _load_images(paths, [str(i) for i in table.ids], size, channels, f"loading {folder.name}")
    skipped = [f"{attributes.name} row {r.row} ({r.id}): {r.reason}" for r in table.rejected] + skipped
    kept_idx = np.asarray(kept, dtype=np.int64)
    # Real folders carry no identity labels: every row is its own group.
    return FaceDataset(
        table.schema,
        images,
        np.asarray(table.values, np.float32)[kept_idx],
        kept_idx.copy(),
        [str(table.ids[i]) for i in kept],
        skipped,
    )


def load_face_dataset(
    path: str | Path,
    *,
    attributes: str | Path = "",
    fmt: str = "auto",
    schema: AttributeSchema | None = None,
    min_confidence: float = 0.75,
    size: int = 64,
    channels: int = 1,
) -> FaceDataset:
    """Load either source; raise ``DatasetError`` naming the path when nothing usable is found."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset folder does not exist")
    if attributes:
        dataset = load_image_folder(
            path,
            Path(attributes),
            fmt=fmt,
            schema=schema,
            min_confidence=min_confidence,
            size=size,
            channels=channels,
        )
    elif (path / "attributes.csv").is_file() and (path / "schema.json").is_file():
        dataset = load_synthetic(path, size, channels)
    else:
        raise DatasetError(
            f"{path}: not a synthetic dataset (no schema.json + attributes.csv) and no "
            "attribute file given (data.attributes / --attributes)"
        )
    if len(dataset) == 0:
        shown = "; ".join(dataset.skipped[:5])
        raise DatasetError(f"{path}: no usable images ({len(dataset.skipped)} skipped: {shown})")
    return dataset


def split_held_out(identities: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train / held-out row indices, split by identity so no held-out person is trained on."""
    unique = np.unique(identities)
    rng = np.random.default_rng(seed)
    n_held = int(round(len(unique) * fraction))
    if fraction > 0 and n_held == 0 and len(unique) > 1:
        n_held = 1
    held_ids = rng.permutation(unique)[:n_held]
    held = np.isin(identities, held_ids)
    return np.flatnonzero(~held), np.flatnonzero(held)


def split_by_row_id(names: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train / held-out row indices decided per row id, not by position.

    Each id is held out when a hash of (seed, id) falls below ``fraction``, so a row keeps its side when
    the attribute file grows or is reordered (a corpus that is still being generated), which a
    permutation of row positions (``split_held_out``) does not guarantee."""
    def draw(name: str) -> float:
        digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    held = np.array([draw(str(name)) < fraction for name in names], dtype=bool)
    return np.flatnonzero(~held), np.flatnonzero(held)
