"""Side-by-side contact sheet of the two 3-D face models: same attributes, same seeds.

    .venv/bin/python docs/make_face_model_sheet.py [--out docs/face_model_sheet.png]

Columns: one attribute row each (caption in docs/face_model.md); rows: the parametric model and the ICT
model at 128 px, then both at 64 px (the service's size) shown twice as large. Every face is a 3-D
surrogate (``render_surrogates_3d``): identity, skin and hair tone from the seed only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLUMNS: tuple[dict[str, float], ...] = (
    {},
    {"AU06": 3.0, "AU12": 4.5},
    {"AU04": 4.0, "AU07": 3.0, "AU23": 2.0},
    {"AU05": 4.5},
    {"AU23": 4.5},
    {"yaw": 35.0, "AU12": 2.0},
    {"pitch": -20.0, "roll": 15.0},
    {"gender": 0.95},
    {"gender": 0.05, "AU12": 2.0},
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "face_model_sheet.png")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    from PIL import Image

    from surrogate.schema import DEFAULT_SCHEMA
    from surrogate.synthesis_3d import render_surrogates_3d

    values = np.zeros((len(COLUMNS), len(DEFAULT_SCHEMA)), np.float32)
    values[:, DEFAULT_SCHEMA.index("gender")] = 0.5
    for i, column in enumerate(COLUMNS):
        for name, value in column.items():
            values[i, DEFAULT_SCHEMA.index(name)] = value
    seeds = [args.seed + i for i in range(len(COLUMNS))]
    rows = []
    for size in (128, 64):  # 64 px faces are enlarged to 128 below (nearest neighbour)
        for model in ("parametric", "ict"):
            faces = render_surrogates_3d(DEFAULT_SCHEMA, values, seeds, size=size, rgb=True, model=model)
            faces = np.stack([np.asarray(Image.fromarray(f).resize((128, 128), Image.NEAREST)) for f in faces])
            rows.append(np.concatenate(list(faces), axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
