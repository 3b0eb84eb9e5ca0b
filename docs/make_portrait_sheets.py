"""Contact sheets per attribute stratum and attribute histograms of a portrait corpus (docs/portraits.md).

    .venv/bin/python docs/make_portrait_sheets.py data/gpu_corpus --out docs

Writes portraits_AU12.png, portraits_AU04.png, portraits_yaw.png (rows: strata of the attribute, as
MediaPipe read it; columns: faces drawn at random from the stratum, captioned) and
portraits_histograms.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from surrogate.adapters import read_attributes  # noqa: E402
from surrogate.imageio import load_image, save_png  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402
from surrogate.sheet import caption, contact_sheet  # noqa: E402

STRATA = {
    "AU12": [(0.0, 1.0), (1.0, 2.5), (2.5, 4.0), (4.0, 5.01)],
    "AU04": [(0.0, 0.5), (0.5, 2.0), (2.0, 3.5), (3.5, 5.01)],
    "yaw": [(-60.0, -20.0), (-20.0, -5.0), (-5.0, 5.0), (5.0, 20.0), (20.0, 60.1)],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="a corpus folder with attributes.csv (or a merged one)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--per-row", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    table = read_attributes(args.corpus / "attributes.csv", schema=DEFAULT_SCHEMA)
    values = table.values
    rng = np.random.default_rng(args.seed)
    for name, strata in STRATA.items():
        column = values[:, DEFAULT_SCHEMA.index(name)]
        images, captions = [], []
        for low, high in strata:
            rows = np.flatnonzero((column >= low) & (column < high))
            pick = rng.choice(rows, size=min(args.per_row, len(rows)), replace=False) if len(rows) else []
            for i in pick:
                images.append(load_image(args.corpus / table.files[i], grayscale=True))
                captions.append([f"{name} in [{low:g}, {min(high, 60 if name == 'yaw' else 5):g})",
                                 *caption(DEFAULT_SCHEMA, values[i])[:2]])
            images += [np.full((64, 64), 255, np.uint8)] * (args.per_row - len(pick))
            captions += [["(none)", "", ""]] * (args.per_row - len(pick))
        save_png(args.out / f"portraits_{name}.png", contact_sheet(images, captions, columns=args.per_row, cell=96))
        print(args.out / f"portraits_{name}.png")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 5, figsize=(15, 5.5), dpi=110)
    for axis, name in zip(axes.ravel(), DEFAULT_SCHEMA.names, strict=True):
        spec = DEFAULT_SCHEMA.spec(name)
        axis.hist(values[:, DEFAULT_SCHEMA.index(name)], bins=30, range=(spec.low, spec.high), color="#4a7ab5")
        axis.set_title(f"{name} ({spec.unit})", fontsize=10)
    figure.suptitle(f"{args.corpus.name}: {len(values)} portraits of nobody, read by MediaPipe "
                    "(gender: the hand-labelled boundary)")
    figure.tight_layout()
    figure.savefig(args.out / "portraits_histograms.png")
    print(args.out / "portraits_histograms.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
