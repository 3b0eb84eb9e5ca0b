"""Contact sheets: a grid of dataset faces, each captioned with its pose, strongest AUs and gender.

People check a synthetic (or surrogate) set by eye: whether yaw goes the documented way, whether a
face labelled AU12 smiles. Each caption gives ``yaw/pitch/roll`` in degrees, the two strongest action
units (or "neutral"), and the gender attribute as P(male).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from surrogate.imageio import to_uint8
from surrogate.schema import AttributeSchema

CAPTION_LINES = 3
LINE_HEIGHT = 11
MIN_CELL = 128


def caption(schema: AttributeSchema, row: np.ndarray) -> list[str]:
    """Three short caption lines for one attribute row in natural units."""
    values = dict(zip(schema.names, map(float, row), strict=True))
    pose = " ".join(f"{name[:3]} {values[name]:+.0f}" for name in ("yaw", "pitch", "roll") if name in values)
    aus = sorted(((v, n) for n, v in values.items() if n.startswith("AU") and v >= 0.5), reverse=True)[:2]
    au_text = " ".join(f"{n} {v:.1f}" for v, n in aus) if aus else "neutral"
    if "gender" in values:
        g = values["gender"]
        gender_text = f"{'male' if g >= 0.5 else 'female'} P(m)={g:.2f}"
    else:
        gender_text = ""
    return [pose or "pose n/a", au_text, gender_text]


def contact_sheet(
    images: Sequence[np.ndarray], captions: Sequence[Sequence[str]], columns: int = 8, cell: int | None = None
) -> np.ndarray:
    """Tile images (upscaled to ``cell`` pixels) with caption lines under each -> uint8 RGB."""
    from PIL import Image, ImageDraw, ImageFont

    if not images:
        raise ValueError("contact_sheet needs at least one image")
    columns = max(1, min(columns, len(images)))
    size = images[0].shape[0]
    cell = cell or max(size, MIN_CELL)
    text_h = CAPTION_LINES * LINE_HEIGHT + 4
    rows = (len(images) + columns - 1) // columns
    pad = 4
    sheet = Image.new("RGB", (columns * (cell + pad) + pad, rows * (cell + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (image, lines) in enumerate(zip(images, captions, strict=True)):
        r, c = divmod(i, columns)
        x, y = pad + c * (cell + pad), pad + r * (cell + text_h + pad)
        tile = Image.fromarray(to_uint8(image)).convert("RGB").resize((cell, cell), Image.BICUBIC)
        sheet.paste(tile, (x, y))
        for k, line in enumerate(lines):
            draw.text((x + 1, y + cell + 2 + k * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    return np.asarray(sheet)
