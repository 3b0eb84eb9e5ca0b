"""Why do MediaPipe's readings of AU05, AU07 and AU23 follow the ICT model's renders weakly? (issue 21)

    .venv/bin/python benchmarks/ict_au_diagnosis.py [--seeds 1 2 3] [--n 300] [--sizes 64 128 256]
    .venv/bin/python benchmarks/ict_au_diagnosis.py --pool data/portraits_p2/attributes_images128c.csv \
        --rows 8032:9232 --n 900 --sizes 64
    .venv/bin/python benchmarks/ict_au_diagnosis.py --sweep-figure docs/face_model_sweep.png

Tables (default): renders ``face_model_readback.py``'s draw (same rows and seeds for a given seed; tune on
seeds other than that benchmark's seed 0), or rows of a corpus attribute CSV (``--pool``; tune on rows other
than the benchmark's 9232:9832), with the ICT model at each size, reads them with the project's
MediaPipe reader (each face upscaled to 256 px, as the benchmark does), and prints per read AU:

* Pearson r of the requested intensity against the reading (the benchmark's figure), per size: if r
  rises a lot with the render size, the 64 px face has lost what the reader needs;
* a least-squares fit of the reading on all requested attributes (standardised: the reading's change per
  standard deviation of each request): off-diagonal AU columns are cross-talk (another AU moving this
  reading), the pose columns the reader's dependence on the view; ``resid sd`` is what no requested
  attribute explains (the reader's scatter on these faces, identity, and the curve's non-linearity);
* ``r without cross-talk`` = own / hypot(own, resid sd): the r the reading would reach if every other
  column were 0, the ceiling that decorrelating the AUs alone could give at that size;
* r over the rows where every rival AU (``RIVALS``: the others acting on the same eye or lips) is 0, and
  over the rest: what the co-activation of AUs on one feature costs, interactions included.

``--sweep-figure``: one AU at a time at intensities 0..5 (every other AU 0; 12 identities, near-frontal
poses), the five calibrated readings against the request at 64 and 256 px; the diagonal panels are each
AU's own curve, the others its cross-talk.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from face_model_readback import draw_pool, draw_rows, upscale  # this folder (the script is run as a file)

from surrogate.stats import pearson

READ = ("AU04", "AU05", "AU07", "AU12", "AU23")
REQUESTED = ("AU04", "AU05", "AU06", "AU07", "AU12", "AU23")
# The other requested AUs that act on the same feature (the eye aperture, the lips).
RIVALS = {"AU04": ("AU05", "AU06", "AU07"), "AU05": ("AU04", "AU06", "AU07"), "AU07": ("AU04", "AU05", "AU06"),
          "AU12": ("AU23",), "AU23": ("AU12",)}


def render(values: np.ndarray, seeds: list[int], size: int) -> np.ndarray:
    from surrogate.schema import DEFAULT_SCHEMA
    from surrogate.synthesis_3d import render_surrogates_3d

    return render_surrogates_3d(DEFAULT_SCHEMA, values, seeds, size=size, model="ict")


def read_aus(faces: np.ndarray) -> dict[str, np.ndarray]:
    """Calibrated AU readings (0-5) per face; NaN where MediaPipe finds no face."""
    from surrogate.landmarks import FaceLandmarks

    reader = FaceLandmarks()
    out = {au: np.full(len(faces), np.nan) for au in READ}
    for i, face in enumerate(faces):
        reading = reader.read(upscale(face, 256))
        if reading is not None:
            aus = reading.aus()
            for au in READ:
                out[au][i] = aus[au]
    reader.close()
    return out


def tables(seeds: list[int], n: int, sizes: list[int], pool: str | None = None, pool_rows: str = "") -> None:
    from surrogate.schema import DEFAULT_SCHEMA

    if pool:
        values = draw_pool(pool, pool_rows, n, seeds[0])
        face_seeds = [seeds[0] * 100_000 + i for i in range(len(values))]
        request = {name: values[:, k] for k, name in enumerate(DEFAULT_SCHEMA.names)}
    else:
        rows = [draw_rows(n, np.random.default_rng(seed), 35.0, 20.0, 20.0) for seed in seeds]
        request = {name: np.concatenate([r[name] for r in rows]) for name in DEFAULT_SCHEMA.names}
        values = np.stack([request[name] for name in DEFAULT_SCHEMA.names], axis=1).astype(np.float32)
        face_seeds = [seed * 100_000 + i for seed in seeds for i in range(n)]
    columns = [*REQUESTED, "|yaw|", "pitch", "|roll|", "gender"]
    design = np.stack([request[au] for au in REQUESTED] + [np.abs(request["yaw"]), request["pitch"],
                                                           np.abs(request["roll"]), request["gender"]], axis=1)
    design = (design - design.mean(0)) / design.std(0)
    drawn = f"rows {pool_rows} of {pool}, seed {seeds[0]}" if pool else f"seeds {seeds}"
    print(f"ICT model, {len(values)} rows ({drawn}), read by MediaPipe at 256 px")
    for size in sizes:
        read = read_aus(render(values, face_seeds, size))
        found = np.isfinite(read[READ[0]])
        print(f"\n{size} px: faces found {found.mean():.1%}; reading ~ requested (per sd of each request)\n")
        print("| read | " + " | ".join(columns) + " | resid sd | r | r without cross-talk "
              "| r, rivals 0 (rows) | r, a rival active |")
        print("|" + "---|" * (len(columns) + 6))
        for au in READ:
            y = read[au][found]
            a = np.c_[np.ones(int(found.sum())), design[found]]
            beta = np.linalg.lstsq(a, y, rcond=None)[0]
            resid = float((y - a @ beta).std())
            own = float(beta[1 + REQUESTED.index(au)])
            r = pearson(request[au][found], y)
            alone = np.all([request[rival][found] == 0 for rival in RIVALS[au]], axis=0)
            x = request[au][found]
            cells = [f"{b:.2f}" for b in beta[1:]] + [f"{resid:.2f}", f"{r:.3f}", f"{own / np.hypot(own, resid):.3f}",
                                                       f"{pearson(x[alone], y[alone]):.2f} ({int(alone.sum())})",
                                                       f"{pearson(x[~alone], y[~alone]):.2f}"]
            print(f"| {au} | " + " | ".join(cells) + " |", flush=True)


def sweep_figure(path: Path, sizes: tuple[int, ...] = (64, 256), identities: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from surrogate.schema import DEFAULT_SCHEMA

    levels = np.arange(0.0, 5.01, 0.5)
    rng = np.random.default_rng(3)
    fig, axes = plt.subplots(len(READ), len(READ), figsize=(13, 12), sharex=True, sharey=True)
    for col, au in enumerate(READ):
        m = len(levels) * identities
        rows = {name: np.zeros(m) for name in DEFAULT_SCHEMA.names}
        rows.update(yaw=rng.uniform(-15, 15, m), pitch=rng.uniform(-8, 8, m), roll=rng.uniform(-8, 8, m),
                    gender=rng.uniform(0, 1, m))
        rows[au] = np.repeat(levels, identities)
        values = np.stack([rows[name] for name in DEFAULT_SCHEMA.names], axis=1).astype(np.float32)
        seeds = [300_000 + i % identities for i in range(m)]
        for size, style in zip(sizes, ("-o", "--s"), strict=False):
            read = read_aus(render(values, seeds, size))
            for row, shown in enumerate(READ):
                mean = np.nanmean(read[shown].reshape(len(levels), identities), axis=1)
                axes[row, col].plot(levels, mean, style, ms=3, label=f"rendered at {size} px")
        for row, shown in enumerate(READ):
            axes[row, col].plot(levels, levels, ":", color="grey", lw=0.8)
            axes[row, col].set_ylim(-0.2, 5.2)
            if row == len(READ) - 1:
                axes[row, col].set_xlabel(f"requested {au}")
            if col == 0:
                axes[row, col].set_ylabel(f"MediaPipe {shown}")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("ICT model: one AU requested at a time (columns), MediaPipe's calibrated readings (rows); "
                 f"mean of {identities} identities")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--pool", help="draw --n rows of this canonical attribute CSV (first seed) instead")
    parser.add_argument("--rows", default="8032:9232", help="rows start:stop of --pool")
    parser.add_argument("--sweep-figure", type=Path, help="draw the single-AU sweeps to this PNG instead")
    args = parser.parse_args()
    if args.sweep_figure:
        sweep_figure(args.sweep_figure)
    else:
        tables(args.seeds, args.n, args.sizes, args.pool, args.rows)


if __name__ == "__main__":
    main()
