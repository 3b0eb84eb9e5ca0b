"""Image and file I/O shared by every part: atomic writes, PNG encode/decode, grids.

Atomic writes (temp file in the same folder, fsync, rename) mean that a killed process never leaves a
half-written image, checkpoint, model or CSV behind: a file either exists whole or not at all.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 40_000_000
# What Pillow's plug-ins raise for hostile or corrupt files (a LAB TIFF, a bad PPM header, a corrupt IHDR).
_UNREADABLE = (
    UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, TypeError, SyntaxError, EOFError,
    IndexError, KeyError, struct.error, ZeroDivisionError, OverflowError, AttributeError, MemoryError,
)


class ImageDecodeError(ValueError):
    """An upload or file that is not a readable image."""


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def safe_file_stem(name: object, *, fallback: str = "row", max_length: int | None = None) -> str:
    """``name`` made safe as a file or archive entry name: no path separators, no leading dots."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)).strip(".")
    return keep[:max_length] or fallback


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 HxW, HxWx1, HxWx3 or HxWx4 -> HxWx3 (grey repeated, alpha dropped)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
    raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Accept HxW, HxWx1, HxWx3 or CxHxW (C in 1, 3) arrays; return HxW or HxWx3 uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.transpose(image, (1, 2, 0))
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 array -> PNG bytes (fast compression: PNGs are transient on the hot path)."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(image, compress_level=6))


def decode_image(data: bytes, *, grayscale: bool = False, name: str = "image") -> np.ndarray:
    """Bytes of any PIL-readable image -> uint8 HxW (grayscale) or HxWx3. Never touches disk."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(f"{name}: {img.width}x{img.height} is larger than {MAX_IMAGE_PIXELS} pixels")
            img = img.convert("L" if grayscale else "RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except ImageDecodeError:
        raise
    except _UNREADABLE as exc:
        # Not `from exc`: the cause's message can quote bytes of the file and would follow it into logs.
        raise ImageDecodeError(f"{name}: not a readable image ({exc.__class__.__name__})") from None


def load_image(path: str | os.PathLike[str], *, grayscale: bool = False) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read ({exc.strerror})") from exc
    return decode_image(data, grayscale=grayscale, name=str(path))


def image_grid(images: Sequence[np.ndarray], columns: int, pad: int = 2, background: int = 255) -> np.ndarray:
    """Tile equally sized images (HxW or HxWx3 uint8) into one grid image."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    tiles = [to_uint8(im) for im in images]
    rgb = any(t.ndim == 3 for t in tiles)
    tiles = [np.repeat(t[..., None], 3, axis=2) if rgb and t.ndim == 2 else t for t in tiles]
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    shape = (rows * (h + pad) + pad, columns * (w + pad) + pad) + ((3,) if rgb else ())
    grid = np.full(shape, background, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = tile
    return grid
