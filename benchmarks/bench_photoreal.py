"""The photoreal method measured: detection, r requested vs read, gender AUC, identity, speed.

Attribute vectors are drawn from corpus rows that neither the directions nor the calibration used (for
version 2: the readings of rows 9232-9831 of the edited corpus, ``scripts/fit_photoreal_calibration.py
--cache``; the readings are only requests here). Each of n/2 fresh seeds renders two different vectors,
so the same person is seen with two sets of attributes. Readers: MediaPipe for pose and AUs (on the 256 px
colour framing, the 128 px grey default and the 64 px grey crop), the shipped recon network for gender on
the 64 px grey crop (what ``surrogate attributes extract`` reads by default; the gender boundary's
probability of the edited w would not be an independent reading and is printed only for comparison),
and recon's pose and AUs on that crop as a third reader beside MediaPipe and dlib's geometry
(``benchmarks/dlib_agreement.py`` on ``--save``). Identity: dlib's descriptor distance.

    PYTHONPATH=. .venv/bin/python scripts/fit_photoreal_calibration.py --corpus data/portraits_p2 \\
        --rows 9232:9832 --corpus-directions data/directions_p2.npz --cache POOL.npz --out runs/unused_calibration.npz
    PYTHONPATH=. .venv/bin/python benchmarks/bench_photoreal.py --attributes POOL.npz --n 500 --save DIR
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from surrogate.schema import DEFAULT_SCHEMA

EVALUATION_SEED_BASE = 8_000_000_000  # fresh seeds, nowhere near the corpus's or the calibration's


def read_rows(path: str, rows: str) -> np.ndarray:
    """(N, A) DEFAULT_SCHEMA values of rows start:stop of a canonical attribute CSV, or of the faces found in
    an .npz of corpus readings (``scripts/fit_photoreal_calibration.py --cache``: all its rows), clipped to
    the schema's range (AU06, which no direction moves, is kept as read)."""
    if path.endswith(".npz"):
        with np.load(path) as data:
            return DEFAULT_SCHEMA.clip(data["read"][data["found"]])
    import csv

    start, stop = (int(x) for x in rows.split(":"))
    with open(path, newline="") as handle:
        records = list(csv.DictReader(handle))[start:stop]
    return np.array([[float(r[n]) for n in DEFAULT_SCHEMA.names] for r in records], np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attributes", required=True)
    parser.add_argument("--rows", default="1024:2048")
    parser.add_argument("--n", type=int, default=120, help="surrogates (an even number: n/2 seeds, two each)")
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--refine", type=int, default=None, help="refinement rounds (default: the method's)")
    parser.add_argument("--models", default=None, help="a folder with other directions/calibration files")
    parser.add_argument("--edit-budget", type=float, default=None,
                        help="the longest edit of w (default: the method's EDIT_BUDGET; 0: no limit)")
    parser.add_argument("--save", default=None, help="a folder for the 256 px renders and the requested values "
                        "(attributes.csv, for benchmarks/dlib_agreement.py: a reader independent of MediaPipe)")
    args = parser.parse_args()

    from surrogate.extract import OnnxEstimator
    from surrogate.face_identity import DlibIdentity
    from surrogate.landmarks import MediaPipeEstimator
    from surrogate.photoreal import EDIT_BUDGET, MODELS_DIR, PhotorealBackend
    from surrogate.portrait_directions import GenderBoundary
    from surrogate.runtime import default_repository, generate_images, generator_noise
    from surrogate.stats import auc, pearson
    from surrogate.synthesis import photoreal_images

    pool = read_rows(args.attributes, args.rows)
    rng = np.random.default_rng(1)
    values = pool[rng.choice(len(pool), args.n, replace=False)]
    seeds = [EVALUATION_SEED_BASE + i // 2 for i in range(args.n)]  # rows 2j and 2j+1 share a seed

    budget = EDIT_BUDGET if args.edit_budget is None else (args.edit_budget or None)
    backend = PhotorealBackend(refine=args.refine, models=args.models, edit_budget=budget)

    def synthesize(rows: slice, size: int, rgb: bool) -> np.ndarray:
        return photoreal_images(generate_images(backend, values[rows], seeds[rows]), size=size, rgb=rgb)

    synthesize(slice(0, 1), 128, False)  # compile and the mean w, outside the timing
    started = time.perf_counter()
    colour = np.concatenate([synthesize(slice(s, s + args.chunk), 256, True) for s in range(0, args.n, args.chunk)])
    seconds = time.perf_counter() - started
    if args.save:
        save(args.save, colour, values)
    grey128 = photoreal_images(colour, size=128)
    grey64 = photoreal_images(colour, size=64)
    small = time.perf_counter()
    synthesize(slice(0, 8), 128, False)
    per_128 = (time.perf_counter() - small) / 8

    mediapipe = MediaPipeEstimator()
    read = {"256 colour": mediapipe.predict(colour)}
    found = {"256 colour": mediapipe.found.copy()}
    read["128 grey (default)"] = mediapipe.predict(grey128)
    found["128 grey (default)"] = mediapipe.found.copy()
    read["64 grey"] = mediapipe.predict(grey64)
    found["64 grey"] = mediapipe.found.copy()
    recon = OnnxEstimator(str(default_repository()))
    recon_read = recon.predict(list(grey64))
    gender_read = recon_read[:, recon.schema.index("gender")]
    requested_gender = values[:, DEFAULT_SCHEMA.index("gender")]

    where = "the faces found" if args.attributes.endswith(".npz") else f"rows {args.rows}"
    print(f"{args.n} surrogates of {args.n // 2} seeds, vectors from {where} of {args.attributes}; "
          f"{backend.refine} refinement round(s), edit budget {backend.edit_budget}, routed "
          f"{backend.gan.metadata['routed'] or 'none'}")
    print(f"speed: {args.n / seconds:.2f} surrogates/s at 256 px colour in chunks of {args.chunk} "
          f"({seconds / args.n:.2f} s each); 128 px grey: {1 / per_128:.2f} /s (512 px wavelet-band path, "
          "rotate, MediaPipe framing, crop)")
    for size, estimates in read.items():
        hit = found[size]
        print(f"\n{size}: MediaPipe found {hit.sum()}/{args.n} ({100 * hit.mean():.1f}%)")
        for j, name in enumerate(mediapipe.schema.names):
            k = DEFAULT_SCHEMA.index(name)
            r = pearson(values[hit, k], estimates[hit, j])
            note = ""
            if name == "yaw":
                inside = hit & (np.abs(values[:, k]) <= 30)
                note = f"   (|requested yaw| <= 30: r {pearson(values[inside, k], estimates[inside, j]):.3f})"
            if name == "AU06":
                note = "   (no direction: MediaPipe's AU06 is a proxy of AU07 and AU12)"
            slope = np.polyfit(values[hit, k], estimates[hit, j], 1)[0]  # r hides a face that reads too weakly
            print(f"  {name:6s} r {r:.3f}  slope {slope:5.2f}  requested mean {values[hit, k].mean():6.2f} "
                  f"sd {values[hit, k].std():5.2f}  read mean {estimates[hit, j].mean():6.2f} "
                  f"sd {estimates[hit, j].std():5.2f}{note}")
    # A third reader of the pose and AUs, apart from MediaPipe (which steers the edit) and dlib's geometry
    # (dlib_agreement.py): recon was trained on MediaPipe's labels of portraits edited in w, so it is not blind
    # to MediaPipe, but it reads pixels its own way; an edit MediaPipe reads and recon does not is a warning.
    print("\nrecon on the 64 px grey crop, r with the request: " + ", ".join(
        f"{name} {pearson(values[:, DEFAULT_SCHEMA.index(name)], recon_read[:, recon.schema.index(name)]):.3f}"
        for name in ("yaw", "pitch", "roll", "AU04", "AU05", "AU07", "AU12", "AU23") if name in recon.schema.names))
    labels = requested_gender > 0.5
    print(f"\ngender (recon on the 64 px grey crop): AUC {auc(gender_read, labels):.3f} against requested > 0.5; "
          f"r {pearson(requested_gender, gender_read):.3f}")
    # The pool's gender is a reading in 0..1, and a request near 0.5 asks for an ambiguous face.
    clear = np.abs(requested_gender - 0.5) > 0.1
    print(f"  requests outside 0.4-0.6 ({clear.sum()} of {args.n}): AUC {auc(gender_read[clear], labels[clear]):.3f}")
    boundary = GenderBoundary.load(MODELS_DIR / "gender_boundary.npz")  # the labels' boundary, whatever --models
    w = backend.latents(values, generator_noise(seeds, backend.gan))
    print(f"  for comparison only (not independent): the gender boundary on the edited w: AUC "
          f"{auc(boundary.probability(w), labels):.3f}")

    identity = DlibIdentity()
    descriptors, _ = identity.describe(list(colour))
    same = np.linalg.norm(descriptors[0::2] - descriptors[1::2], axis=1)
    firsts = descriptors[0::2]
    i, j = np.triu_indices(len(firsts), 1)
    different = np.linalg.norm(firsts[i] - firsts[j], axis=1)
    print(f"\nidentity (dlib, 256 px colour): same seed, different attributes: distance < 0.5 in "
          f"{100 * (same < 0.5).mean():.1f}% of {len(same)} pairs (median {np.median(same):.3f}); different seeds: "
          f"> 0.6 in {100 * (different > 0.6).mean():.1f}% of {len(different)} pairs (median "
          f"{np.median(different):.3f})")
    # One private person's photos share a gender: the pairs whose requested genders agree, and by how far
    # apart the two renders' yaw is read (photos of one real person at two poses move the descriptor too).
    gender_k = DEFAULT_SCHEMA.index("gender")
    agree = (values[0::2, gender_k] > 0.5) == (values[1::2, gender_k] > 0.5)
    print(f"  pairs requesting the same gender side: < 0.5 in {100 * (same[agree] < 0.5).mean():.1f}% of "
          f"{agree.sum()} (median {np.median(same[agree]):.3f})")
    yaw_j = mediapipe.schema.index("yaw")
    both = found["256 colour"][0::2] & found["256 colour"][1::2]
    gap = np.abs(read["256 colour"][0::2, yaw_j] - read["256 colour"][1::2, yaw_j])
    for low, high in ((0, 10), (10, 20), (20, 30), (30, 90)):
        inside = both & (gap >= low) & (gap < high)
        if inside.any():
            print(f"  |yaw read difference| {low}-{high} deg: {inside.sum()} pairs, < 0.5 in "
                  f"{100 * (same[inside] < 0.5).mean():.0f}% (median {np.median(same[inside]):.3f})")


def save(folder: str, colour: np.ndarray, values: np.ndarray) -> None:
    """The renders as PNGs and the requested values as a canonical attribute CSV beside them."""
    import csv
    from pathlib import Path

    from PIL import Image

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "attributes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "file", *DEFAULT_SCHEMA.names])
        for i, (image, row) in enumerate(zip(colour, values, strict=True)):
            Image.fromarray(image).save(out / f"{i:04d}.png")
            writer.writerow([f"{i:04d}", f"{i:04d}.png", *(f"{v:.4f}" for v in row)])


if __name__ == "__main__":
    main()
