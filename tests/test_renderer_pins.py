"""Pinned pixels of the 3-D renderer: a change that alters what it draws must bump RENDERER_VERSION.

A 3-D surrogate depends only on (attributes, seed, RENDERER_VERSION), and batch outputs, service
responses and synthetic datasets record that version; so a pixel change under the same version would
silently break that promise (and mix two looks in one dataset folder). This test renders a fixed strip of
faces and compares it with the strip recorded for the current version.

After an intended change: bump ``surrogate.render.RENDERER_VERSION``, note it in docs/face_model.md and
record the new strip with ``python tests/test_renderer_pins.py --record``. The ICT face model
(``surrogate.ict_model``) is pinned the same way under its own ``ICT_MODEL_VERSION``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from surrogate.ict_model import ICT_MODEL_VERSION
from surrogate.imageio import load_image, save_png
from surrogate.render import RENDERER_VERSION
from surrogate.schema import DEFAULT_SCHEMA
from surrogate.synthesis_3d import render_surrogates_3d

PINS = Path(__file__).resolve().parent / "fixtures" / "renderer"
SIZE = 64
# Numerical jitter between numpy builds may move a few pixels by a level; changing one AU of one face by
# 0.2 moves 12-30 pixels by more than 2 levels (test below).
LEVELS, MAX_CHANGED_PIXELS = 2, 8


def probe_strip(face_model: str = "parametric") -> np.ndarray:
    """Neutral, each AU at 4, head turned / tilted / rolled, both genders: (SIZE, 10 * SIZE) uint8."""
    neutral = {name: 0.0 for name in DEFAULT_SCHEMA.names} | {"gender": 0.5}
    rows = [neutral]
    rows += [neutral | {au: 4.0} for au in ("AU04", "AU05", "AU06", "AU07", "AU12", "AU23")]
    rows += [neutral | {"yaw": 40.0, "pitch": -25.0}, neutral | {"roll": 20.0, "gender": 0.0}]
    rows += [neutral | {"gender": 1.0, "AU12": 2.0}]
    values = np.array([[row[name] for name in DEFAULT_SCHEMA.names] for row in rows], np.float32)
    faces = render_surrogates_3d(DEFAULT_SCHEMA, values, seeds=list(range(len(rows))), size=SIZE,
                                 model=face_model)
    return np.concatenate(list(faces), axis=1)


def pin_path(version: str = RENDERER_VERSION, face_model: str = "parametric") -> Path:
    return PINS / (f"renderer_v{version}.png" if face_model == "parametric" else f"ict_v{version}.png")


def changed_pixels(drawn: np.ndarray, pinned: np.ndarray) -> int:
    return int((np.abs(drawn.astype(np.int16) - pinned.astype(np.int16)) > LEVELS).sum())


def test_renderer_draws_the_pixels_pinned_for_its_version() -> None:
    assert RENDERER_VERSION.isdigit(), "RENDERER_VERSION must be a whole number (the service reports it as one)"
    path = pin_path()
    assert path.is_file(), (
        f"no pinned strip for RENDERER_VERSION {RENDERER_VERSION}: record it with "
        "`python tests/test_renderer_pins.py --record`"
    )
    pinned = load_image(path, grayscale=True)
    drawn = probe_strip()
    assert drawn.shape == pinned.shape
    changed = changed_pixels(drawn, pinned)
    assert changed <= MAX_CHANGED_PIXELS, (
        f"the renderer now draws different pixels than version {RENDERER_VERSION} did "
        f"({changed} pixels of the strip moved by more than {LEVELS} levels): bump "
        "surrogate.render.RENDERER_VERSION, note the change in docs/face_model.md and record the new strip "
        "with `python tests/test_renderer_pins.py --record`"
    )


def test_the_ict_model_draws_the_pixels_pinned_for_its_version() -> None:
    path = pin_path(ICT_MODEL_VERSION, "ict")
    assert path.is_file(), f"no pinned strip for ICT_MODEL_VERSION {ICT_MODEL_VERSION}: record it with --record"
    changed = changed_pixels(probe_strip("ict"), load_image(path, grayscale=True))
    assert changed <= MAX_CHANGED_PIXELS, (
        f"the ICT face model now draws different pixels than version {ICT_MODEL_VERSION} did ({changed} pixels "
        "moved): bump surrogate.ict_model.ICT_MODEL_VERSION, note it in docs/face_model.md and record the new "
        "strip with `python tests/test_renderer_pins.py --record`"
    )


@pytest.mark.parametrize("face_model", ["parametric", "ict"])
def test_the_pin_notices_a_small_change_of_one_face(face_model: str) -> None:
    """The smile of one face 0.2 weaker: the kind of drift the pin must not let through."""
    strip = probe_strip(face_model)
    values = np.zeros((1, len(DEFAULT_SCHEMA)), np.float32)
    values[0, DEFAULT_SCHEMA.index("gender")] = 0.5
    values[0, DEFAULT_SCHEMA.index("AU12")] = 3.8
    weaker = render_surrogates_3d(DEFAULT_SCHEMA, values, seeds=[5], size=SIZE, model=face_model)[0]
    drifted = strip.copy()
    drifted[:, 5 * SIZE : 6 * SIZE] = weaker
    assert changed_pixels(drifted, strip) > MAX_CHANGED_PIXELS
    assert changed_pixels(strip, strip) == 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_renderer_pins.py --record")
    PINS.mkdir(parents=True, exist_ok=True)
    for model, version in (("parametric", RENDERER_VERSION), ("ict", ICT_MODEL_VERSION)):
        if not pin_path(version, model).is_file():  # a recorded version is never overwritten
            save_png(pin_path(version, model), probe_strip(model))
            print(f"recorded {pin_path(version, model)}")
