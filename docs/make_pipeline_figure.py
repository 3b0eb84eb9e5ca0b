"""Draw docs/pipeline.png: a photo -> its attributes -> surrogates by all three methods, with the real models.

    .venv/bin/python docs/make_pipeline_figure.py [--repository model_repository] [--out docs/pipeline.png]

The photo is scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain): the only kind of real
face a public figure may show. Every step is the project's own code path (face alignment, the exported
reconstruction network, the 3-D face model, the exported generator, the photoreal portraits), so the
picture stays true to what the product does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from surrogate.extract import OnnxEstimator  # noqa: E402
from surrogate.face_align import align_face  # noqa: E402
from surrogate.synthesis import synthesize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--out", default=str(Path(__file__).with_name("pipeline.png")))
    args = parser.parse_args()

    from skimage import data

    photo = data.astronaut()
    face = align_face(photo, size=64)
    if face is None:
        raise SystemExit("no face found in the astronaut photo")
    estimator = OnnxEstimator(args.repository)
    values, confidence = estimator.predict_with_confidence([face.crop])
    schema = estimator.schema
    seeds = [11, 12, 13]
    rows = np.repeat(values, len(seeds), axis=0)
    three_d = synthesize("3d", rows, seeds, schema=schema, repository=args.repository, size=128)
    gan = synthesize("gan", rows, seeds, schema=schema, repository=args.repository, size=128)
    photoreal = synthesize("photoreal", rows, seeds, schema=schema, size=128)

    caption = "\n".join(f"{name} {value:+.1f}" if name in ("yaw", "pitch", "roll") else f"{name} {value:.2f}"
                        for name, value in zip(schema.names, values[0], strict=True))
    fig = plt.figure(figsize=(12, 6.0), dpi=80)
    grid = fig.add_gridspec(3, 6, width_ratios=[1.3, 1.0, 0.9, 1, 1, 1])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(photo)
    ax.set_title("private photo\n(stays in the lab)")
    ax.axis("off")
    ax = fig.add_subplot(grid[:, 1])
    ax.imshow(face.crop, cmap="gray", vmin=0, vmax=255)
    ax.set_title("aligned face\n(surrogate attributes extract)")
    ax.axis("off")
    ax = fig.add_subplot(grid[:, 2])
    ax.text(0.0, 0.5, caption, family="monospace", fontsize=10, va="center")
    ax.set_title("attributes only")
    ax.axis("off")
    methods = (("3-D face model (ICT)", three_d), ("conditional BEGAN-CS", gan), ("photoreal portraits", photoreal))
    for row, (name, images) in enumerate(methods):
        for col, (seed, image) in enumerate(zip(seeds, images, strict=True)):
            ax = fig.add_subplot(grid[row, 3 + col])
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{name}, seed {seed}" if col == 0 else f"seed {seed}", fontsize=9)
            ax.axis("off")
    fig.suptitle("photo -> attributes -> surrogates the crowd sees (nothing else of the person reaches them)")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out} (extraction confidence {float(confidence[0]):.2f})")


if __name__ == "__main__":
    main()
