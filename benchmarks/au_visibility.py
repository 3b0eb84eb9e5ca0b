"""How visible and how separable each paper AU is in 64 x 64 greyscale renders.

Prints two tables:
1. mean |pixel change| against the neutral face (frontal, default FaceParams) at intensities 1, 2, 3, 5,
   in grey levels 0-255: how much of the image an AU moves;
2. a linear probe (ridge regression from pixels to the six AU intensities, random identities, skin,
   gender, all six AUs drawn independently, pose within +-4 degrees): held-out Pearson r per AU. A low r
   means the AU's pixels are either faint or confused with another AU's (the eye AUs all change the
   aperture), so no estimator, and no crowd worker looking at a 3-D surrogate, can read it well. It is a
   floor for what a CNN can do, useful to compare renderer versions.

    .venv/bin/python benchmarks/au_visibility.py [--train 6000 --test 1000]
"""

from __future__ import annotations

import argparse

import numpy as np

from surrogate.face_model import N_IDENTITY, FaceParams
from surrogate.render import render_batch

PAPER_AUS = ("AU04", "AU05", "AU06", "AU07", "AU12", "AU23")


def pixel_change_table(size: int = 64) -> list[tuple[str, list[float]]]:
    neutral = render_batch([FaceParams()], size)[0].astype(np.float32)
    rows = []
    for au in PAPER_AUS:
        images = render_batch([FaceParams(aus={au: v}) for v in (1.0, 2.0, 3.0, 5.0)], size).astype(np.float32)
        rows.append((au, [float(np.abs(image - neutral).mean()) for image in images]))
    return rows


def random_faces(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    params, intensities = [], rng.uniform(0.0, 5.0, (n, len(PAPER_AUS)))
    for row in intensities:
        params.append(FaceParams(
            yaw=rng.uniform(-4, 4), pitch=rng.uniform(-4, 4), roll=rng.uniform(-3, 3),
            aus=dict(zip(PAPER_AUS, row.tolist(), strict=True)), gender=rng.uniform(),
            identity=rng.normal(size=N_IDENTITY).astype(np.float32), skin=rng.uniform(), hair=rng.uniform()))
    pixels = render_batch(params, size).reshape(n, -1).astype(np.float32) / 255.0
    return pixels, intensities


def linear_probe(n_train: int, n_test: int, size: int = 64, ridge: float = 10.0, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    x_train, y_train = random_faces(rng, n_train, size)
    x_test, y_test = random_faces(rng, n_test, size)
    mean = x_train.mean(0)
    x_train, x_test = x_train - mean, x_test - mean
    gram = x_train.T @ x_train + ridge * np.eye(x_train.shape[1], dtype=np.float32)
    weights = np.linalg.solve(gram, x_train.T @ (y_train - y_train.mean(0)))
    predicted = x_test @ weights + y_train.mean(0)
    return {au: float(np.corrcoef(predicted[:, i], y_test[:, i])[0, 1]) for i, au in enumerate(PAPER_AUS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=6000, help="probe training faces")
    parser.add_argument("--test", type=int, default=1000, help="probe held-out faces")
    args = parser.parse_args()
    print("mean |pixel change| vs neutral, 64 px, grey levels")
    print("| AU | intensity 1 | 2 | 3 | 5 |\n|---|---|---|---|---|")
    for au, values in pixel_change_table():
        print(f"| {au} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    r = linear_probe(args.train, args.test)
    print(f"\nlinear probe ({args.train} train / {args.test} held-out renders): Pearson r per AU")
    print("| " + " | ".join(PAPER_AUS) + " |\n|" + "---|" * len(PAPER_AUS))
    print("| " + " | ".join(f"{r[au]:.3f}" for au in PAPER_AUS) + " |")


if __name__ == "__main__":
    main()
