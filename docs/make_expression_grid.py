"""Draw docs/expression_grid.png: joy / anger / neutral by head turn, one seed per method, with the real models.

    .venv/bin/python docs/make_expression_grid.py [--methods gan,3d,photoreal] [--seed 7] [--out PNG]

Rows are the expressions a crowd is asked about (joy: AU06 + AU12; anger: AU04 + AU07 + AU23; neutral: no AU),
columns the requested yaw from -30 to +30 degrees, everything else at rest (pitch and roll 0, gender 0.5).
One seed per method, so each panel is one surrogate person. It is what `surrogate synthesize` renders for
these vectors with the installed default models: when the default GAN changes, run it again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402
from surrogate.synthesis import synthesize  # noqa: E402

EXPRESSIONS = {
    "joy": {"AU06": 3.0, "AU12": 4.0},
    "anger": {"AU04": 4.0, "AU07": 3.0, "AU23": 3.0},
    "neutral": {},
}
YAWS = (-30.0, -15.0, 0.0, 15.0, 30.0)
TITLES = {"gan": "conditional BEGAN-CS", "3d": "3-D face model (ICT)", "photoreal": "photoreal portraits"}


def grid_values() -> np.ndarray:
    """(rows x columns, A) attribute vectors in natural units, row-major (expression, then yaw)."""
    rows = []
    for aus in EXPRESSIONS.values():
        for yaw in YAWS:
            values = {"yaw": yaw, "gender": 0.5, **aus}
            rows.append([values.get(name, 0.0) for name in DEFAULT_SCHEMA.names])
    return np.asarray(rows, np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="gan,3d,photoreal")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repository", default=None)
    parser.add_argument("--out", default=str(Path(__file__).with_name("expression_grid.png")))
    args = parser.parse_args()

    methods = [m for m in args.methods.split(",") if m]
    values = grid_values()
    seeds = [args.seed] * len(values)
    fig, axes = plt.subplots(len(EXPRESSIONS), len(YAWS) * len(methods),
                             figsize=(1.25 * len(YAWS) * len(methods), 1.45 * len(EXPRESSIONS)), dpi=80,
                             squeeze=False)
    for m, method in enumerate(methods):
        images = synthesize(method, values, seeds, schema=DEFAULT_SCHEMA, repository=args.repository,
                            size=args.size)
        for i, image in enumerate(images):
            row, col = divmod(i, len(YAWS))
            ax = axes[row, m * len(YAWS) + col]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{TITLES.get(method, method)}\nyaw {YAWS[col]:+.0f}" if col == 2
                             else f"yaw {YAWS[col]:+.0f}", fontsize=8)
            if col == 0 and m == 0:
                ax.set_ylabel(list(EXPRESSIONS)[row], fontsize=10)
    fig.tight_layout(pad=0.3)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
