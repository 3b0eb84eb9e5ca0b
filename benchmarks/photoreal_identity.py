"""Which attribute edits change the photoreal surrogate's person: dlib distance per single-attribute change.

For each of ``--seeds`` fresh seeds, two attribute vectors v and v' are drawn from a pool of corpus readings
(rows the directions were not fitted on), and the seed is rendered with v, with v', and with v where only
attribute k takes its value from v' (one render per attribute k). The dlib descriptor distance between v's
render and each of the others says how much of the pair's identity change each attribute's edit carries.
Distances are also given by the pose difference MediaPipe reads between the two renders, since photos of one
real person at two head poses move dlib's descriptor too. Readings are written to ``--out`` (an .npz) and the
renders of the first seeds to ``--sheet`` (a PNG contact sheet: one row per seed, v, v', then v with each
attribute of v'). The read-outs of w0 and of the edited w are saved too, so that the renders of an
``--uncalibrated`` run (the edit sets the read-out to the request) can fit the calibration
(``scripts/fit_photoreal_calibration.py --renders``): the gains of the shipped directions measured on
their own edits, not on a corpus edited along other directions.

    PYTHONPATH=. .venv/bin/python benchmarks/photoreal_identity.py --pool POOL.npz \\
        --seeds 24 --out identity.npz --sheet identity.png   # POOL: fit_photoreal_calibration.py --cache
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_photoreal import read_rows
from surrogate.assets import sha256
from surrogate.schema import DEFAULT_SCHEMA

SEED_BASE = 8_500_000_000  # fresh seeds, apart from the benchmark's and the corpora's
EDITED = ("yaw", "pitch", "roll", "AU04", "AU05", "AU07", "AU12", "AU23", "gender")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", required=True, help="an .npz of corpus readings (fit_photoreal_calibration --cache)")
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sheet", default=None)
    parser.add_argument("--sheet-seeds", type=int, default=6)
    parser.add_argument("--uncalibrated", action="store_true",
                        help="edit to the request itself, calibration and refinement off "
                        "(the renders a calibration is fitted on)")
    parser.add_argument("--refine", type=int, default=None, help="refinement rounds (default: the method's)")
    parser.add_argument("--seed-base", type=int, default=SEED_BASE)
    parser.add_argument("--models", default=None, help="a folder with other directions/calibration files")
    parser.add_argument("--edit-budget", type=float, default=None,
                        help="the edit budget (default: the method's EDIT_BUDGET; 0: none)")
    args = parser.parse_args()

    from surrogate.extract import OnnxEstimator
    from surrogate.face_identity import DlibIdentity
    from surrogate.landmarks import MediaPipeEstimator
    from surrogate.photoreal import DIRECTIONS_FILE, EDIT_BUDGET, MODELS_DIR, PhotorealBackend
    from surrogate.runtime import default_repository, generator_noise
    from surrogate.synthesis import photoreal_images

    pool = read_rows(args.pool, "")
    rng = np.random.default_rng(7)
    columns = [DEFAULT_SCHEMA.index(n) for n in EDITED]
    per_seed = 2 + len(EDITED)
    values, seeds = [], []
    for s in range(args.seeds):
        v, other = pool[rng.choice(len(pool), 2, replace=False)]
        rows = [v, other]
        for k in columns:
            mixed = v.copy()
            mixed[k] = other[k]
            rows.append(mixed)
        values.extend(rows)
        seeds.extend([args.seed_base + s] * per_seed)
    values_array = np.stack(values).astype(np.float32)
    backend = PhotorealBackend(calibrated=not args.uncalibrated, models=args.models,
                               refine=0 if args.uncalibrated else args.refine,
                               edit_budget=EDIT_BUDGET if args.edit_budget is None else (args.edit_budget or None))
    z = generator_noise(seeds, backend.gan)
    started = time.perf_counter()
    images = np.concatenate([backend.generate(values_array[i:i + per_seed], z[i:i + per_seed]).transpose(0, 2, 3, 1)
                             for i in range(0, len(seeds), per_seed)])
    seconds = time.perf_counter() - started
    w0 = backend.base_latents(z)
    descriptors, _ = DlibIdentity().describe(list(images))
    reader = MediaPipeEstimator()
    read = reader.predict(images)
    found = reader.found.copy()
    recon = OnnxEstimator(str(default_repository()))
    gender = recon.predict(list(photoreal_images(images, size=64)))[:, recon.schema.index("gender")]
    np.savez_compressed(args.out, values=values_array, seeds=np.array(seeds), descriptors=descriptors, read=read,
                        found=found, read_names=np.array(reader.schema.names), edited=np.array(EDITED),
                        gender=gender, predicted=backend.directions.predict(w0),
                        targets=backend.directions.predict(backend.latents(values_array, z)),
                        direction_names=np.array(backend.directions.names), calibrated=not args.uncalibrated,
                        directions_sha256=sha256(Path(args.models or MODELS_DIR) / DIRECTIONS_FILE))

    d = descriptors.reshape(args.seeds, per_seed, 128)
    distance = np.linalg.norm(d - d[:, :1], axis=2)  # (seeds, per_seed): to v's render
    print(f"{len(seeds)} renders in {seconds:.0f} s ({seconds / len(seeds):.2f} s each, 256 px colour)")
    print(f"v vs v' (all attributes): distance < 0.5 in {100 * (distance[:, 1] < 0.5).mean():.0f}% "
          f"of {args.seeds} seeds, median {np.median(distance[:, 1]):.3f}")
    v = values_array.reshape(args.seeds, per_seed, -1)
    for j, name in enumerate(EDITED):
        k = columns[j]
        change = np.abs(v[:, 1, k] - v[:, 0, k])
        print(f"  only {name:6s} changed (mean |change| {change.mean():6.2f}): median distance "
              f"{np.median(distance[:, 2 + j]):.3f}, < 0.5 in {100 * (distance[:, 2 + j] < 0.5).mean():3.0f}%")
    firsts = d[:, 0]
    i, j = np.triu_indices(len(firsts), 1)
    different = np.linalg.norm(firsts[i] - firsts[j], axis=1)
    by_seed = read.reshape(args.seeds, per_seed, -1)
    for j, name in enumerate(EDITED):  # reading moved per requested unit, from the single-attribute renders
        if name in reader.schema.names:
            k, m = columns[j], reader.schema.index(name)
            asked = v[:, 2 + j, k] - v[:, 0, k]
            moved = by_seed[:, 2 + j, m] - by_seed[:, 0, m]
            print(f"  {name:6s} reading moved {asked @ moved / max(asked @ asked, 1e-9):5.2f} per requested unit")
    print(f"different seeds: > 0.6 in {100 * (different > 0.6).mean():.1f}% of {len(different)} pairs "
          f"(median {np.median(different):.3f})")
    yaw = reader.schema.index("yaw")
    read_yaw = read[:, yaw].reshape(args.seeds, per_seed)
    ok = found.reshape(args.seeds, per_seed)
    gap = np.abs(read_yaw - read_yaw[:, :1])[:, 1:][ok[:, 1:] & ok[:, :1]]
    same = distance[:, 1:][ok[:, 1:] & ok[:, :1]]
    for low, high in ((0, 5), (5, 10), (10, 20), (20, 90)):
        inside = (gap >= low) & (gap < high)
        if inside.any():
            print(f"  |yaw read difference| {low:2d}-{high:2d} deg: {inside.sum():3d} same-seed pairs, median "
                  f"distance {np.median(same[inside]):.3f}, < 0.5 in {100 * (same[inside] < 0.5).mean():.0f}%")
    if args.sheet:
        from PIL import Image

        shown = images[: min(args.sheet_seeds, args.seeds) * per_seed]
        tiles = [np.asarray(Image.fromarray(x).resize((128, 128), Image.BILINEAR)) for x in shown]
        rows_img = [np.concatenate(tiles[r * per_seed:(r + 1) * per_seed], 1) for r in range(len(tiles) // per_seed)]
        Image.fromarray(np.concatenate(rows_img, 0)).save(args.sheet)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
