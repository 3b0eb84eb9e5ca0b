"""How far dlib's identity descriptor moves between two frames of one person whose identity is fixed.

The photoreal identity target (same seed, different attributes: dlib distance < 0.5) asks how much the
attribute edit changes the person. dlib's descriptor also follows pose and expression, so this measures
that part alone: the 3-D face models hold a seed's identity fixed by construction (the same mesh, skin and
hair; only pose and expression move), and they are rendered at the same frame pairs as the photoreal
benchmark. Each of ``--pairs`` seeds gets two attribute vectors drawn from the pool (held-out
portrait-corpus readings), the second taking the first's gender (one private person's photos share it).

Prints per method: same seed, two frames, distance < 0.5 and the median; different seeds (first frames),
distance > 0.6 and the median; the ratio of the two medians (how far a person moves relative to how far
apart dlib puts different people of that kind of render); the verification AUC (how well the distance
tells a same-seed pair from a different-seed pair: scale-free, so comparable across kinds of render); and
the same-seed figures by the yaw gap MediaPipe reads. ``--photoreal`` adds the photoreal method at the same
pairs (about 1 s a render), ``--photoreal-models DIR`` the same with the model files of DIR (a folder holding
version 5's directions and calibration and no style routes renders version 5).

``--distractors G`` adds an identification test that needs no absolute threshold: each pair's second frame is
also rendered from G other seeds (people), and the seed counts as kept when its first frame is nearer to its
own second frame than to all G others, which show the same pose and expression (chance: 1 / (G + 1)). It
asks whether, across a change of pose and expression, a surrogate person stays more like itself than like
any other surrogate person showing that frame: what a crowd worker needs to follow one person.

``--warp`` adds, for each photoreal method, its pairs with identity fixed: each pair's first frame warped so
that its MediaPipe mesh lands on the second frame's (``benchmarks/dlib_geometry_warp.py``), the same pixels
with the second frame's geometry. dlib's distance from the first frame to that warp is what the pose and
expression change alone costs dlib at that pair, up to the warp's own artefacts (large turns fold the far
cheek), which only add to it.

``--sheet FILE`` draws each method's first ``--sheet-pairs`` pairs, the methods' rows of the same pairs one
under the other, captioned with dlib's distance and the two frames' requested yaw and smile, for looking at
what the figures count.

    PYTHONPATH=. .venv/bin/python benchmarks/dlib_frame_drift.py --pairs 150 [--photoreal] \\
        [--photoreal-models DIR] [--distractors 9] \\
        --attributes data/portraits_p2/attributes_images128c.csv --rows 9232:9832 [--sheet FILE]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.bench_photoreal import read_rows
from surrogate.schema import DEFAULT_SCHEMA
from surrogate.stats import auc

SEED_BASE = 8_700_000_000  # fresh seeds, apart from the benchmarks' and the corpora's
DISTRACTOR_BASE = 8_800_000_000
YAW_GAPS = ((0, 10), (10, 20), (20, 30), (30, 90))


def frame_pairs(pool: np.ndarray, pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(2 * pairs, A): two pool rows per seed, the second with the first's gender."""
    gender = DEFAULT_SCHEMA.index("gender")
    out = []
    for _ in range(pairs):
        first, second = pool[rng.choice(len(pool), 2, replace=False)].copy()
        second[gender] = first[gender]
        out += [first, second]
    return np.stack(out).astype(np.float32)


def render(method: str, values: np.ndarray, seeds: list[int]) -> np.ndarray:
    """(N, 256, 256, 3) uint8 renders of one method ("photoreal:DIR": with the model files of folder DIR)."""
    if method.startswith("photoreal"):
        from surrogate.photoreal import PhotorealBackend
        from surrogate.runtime import generate_images
        from surrogate.synthesis import photoreal_images

        backend = PhotorealBackend(models=method.partition(":")[2] or None)
        return photoreal_images(generate_images(backend, values, seeds, batch_size=8), size=256, rgb=True)
    from surrogate.synthesis_3d import render_surrogates_3d

    return render_surrogates_3d(DEFAULT_SCHEMA, values, seeds, size=256, rgb=True, model=method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attributes", required=True, help="a canonical attribute CSV (the pool)")
    parser.add_argument("--rows", default="9232:9832")
    parser.add_argument("--pairs", type=int, default=150)
    parser.add_argument("--face-models", nargs="*", default=["ict", "parametric"])
    parser.add_argument("--photoreal", action="store_true", help="add the photoreal method (needs its model files)")
    parser.add_argument("--photoreal-models", nargs="*", default=[], metavar="DIR",
                        help="add the photoreal method with other model files (e.g. an earlier version's)")
    parser.add_argument("--distractors", type=int, default=0,
                        help="G other seeds rendered at each second frame: the identification test")
    parser.add_argument("--warp", action="store_true",
                        help="add each photoreal pair's first frame warped to the second frame's mesh")
    parser.add_argument("--sheet", default=None, help="an image file: the first pairs of every method, captioned")
    parser.add_argument("--sheet-pairs", type=int, default=16)
    args = parser.parse_args()

    from surrogate.face_identity import DlibIdentity
    from surrogate.landmarks import FaceLandmarks, readings_array

    values = frame_pairs(read_rows(args.attributes, args.rows), args.pairs, np.random.default_rng(7))
    seeds = [SEED_BASE + i // 2 for i in range(len(values))]
    identity, reader = DlibIdentity(), FaceLandmarks()
    print(f"{args.pairs} seeds x 2 frames from rows {args.rows} of {args.attributes} (gender kept), 256 px colour")
    g = args.distractors
    identification = [f"identified among {g + 1} (chance {1 / (g + 1):.0%})"] if g else []
    print("| method | same seed < 0.5 | median | different seeds > 0.6 | median | ratio of medians | "
          "verification AUC | " + " | ".join(f"yaw gap {lo}-{hi}: < 0.5" for lo, hi in YAW_GAPS) + " | "
          + "".join(f"{c} | " for c in identification))
    print("|" + "---|" * (7 + len(YAW_GAPS) + len(identification)))
    sheets = []
    for method in [*args.face_models, *(f"photoreal:{folder}" for folder in args.photoreal_models),
                   *(["photoreal"] if args.photoreal else [])]:
        started = time.perf_counter()
        images = render(method, values, seeds)
        descriptors, _ = identity.describe(list(images))
        pairs = descriptors.reshape(args.pairs, 2, -1)
        same = np.linalg.norm(pairs[:, 0] - pairs[:, 1], axis=1)
        i, j = np.triu_indices(args.pairs, 1)
        different = np.linalg.norm(pairs[i, 0] - pairs[j, 0], axis=1)
        # how well a smaller distance tells a same-seed pair from a different-seed pair
        verification = auc(-np.concatenate([same, different]),
                           np.r_[np.ones(len(same), bool), np.zeros(len(different), bool)])
        readings = [reader.read(image) for image in images]  # the --warp rows reuse the meshes
        yaw = readings_array(readings, ("yaw",)).reshape(args.pairs, 2)
        both = ~np.isnan(yaw).any(axis=1)
        gap = np.abs(yaw[:, 0] - yaw[:, 1])
        by_gap = kept_by_gap(same, both, gap)
        identified = ""
        if g:
            # every pair's second frame from G other people: is the seed's own second frame the nearest?
            others = render(method, np.repeat(values[1::2], g, axis=0),
                            [DISTRACTOR_BASE + i for i in range(args.pairs * g)])
            other_descriptors = identity.describe(list(others))[0].reshape(args.pairs, g, -1)
            nearest_other = np.linalg.norm(other_descriptors - pairs[:, :1], axis=2).min(axis=1)
            identified = f" {(same < nearest_other).mean():.1%} |"
        print(f"| {method} | {(same < 0.5).mean():.1%} | {np.median(same):.3f} | {(different > 0.6).mean():.1%} | "
              f"{np.median(different):.3f} | {np.median(same) / np.median(different):.2f} | "
              f"{verification:.3f} | "
              + " | ".join(by_gap)
              + f" |{identified}  ({time.perf_counter() - started:.0f} s)", flush=True)
        if args.warp and method.startswith("photoreal"):
            warped = geometry_only(images, readings)  # warped where ``both`` frames were read
            fixed = np.linalg.norm(identity.describe(list(warped))[0] - pairs[:, 0], axis=1)
            print(f"| {method}, first frame warped to the second's mesh ({both.sum()} pairs) | "
                  f"{(fixed[both] < 0.5).mean():.1%} | {np.median(fixed[both]):.3f} | - | - | - | - | "
                  + " | ".join(kept_by_gap(fixed, both, gap)) + " |" + (" - |" if g else ""), flush=True)
            if args.sheet:
                sheets.append((f"{method} warp", np.stack([images[0::2], warped], 1).reshape(images.shape),
                               fixed))
        if args.sheet:
            sheets.append((method, images, same))
    if sheets:
        from PIL import Image

        Image.fromarray(pair_sheet(sheets, values, min(args.sheet_pairs, args.pairs))).save(args.sheet, quality=88)
        print(f"sheet: {args.sheet}")


def kept_by_gap(distances: np.ndarray, both: np.ndarray, gap: np.ndarray) -> list[str]:
    """Per yaw gap of ``YAW_GAPS``, the share of the pairs read in ``both`` frames whose distance is < 0.5."""
    out = []
    for lo, hi in YAW_GAPS:
        inside = both & (gap >= lo) & (gap < hi)
        out.append(f"{(distances[inside] < 0.5).mean():.0%} of {inside.sum()}" if inside.any() else "-")
    return out


def geometry_only(images: np.ndarray, readings: list) -> np.ndarray:
    """Each pair's first frame of ``images`` (2 * pairs, ...) warped so that its MediaPipe mesh (``readings``,
    one per image) lands on the second frame's: (pairs, ...); the first frame unwarped where either mesh is
    missing (the pairs the caller's "read in both frames" mask leaves out)."""
    from benchmarks.dlib_geometry_warp import warp_to

    out = images[0::2].copy()
    for k in range(len(out)):
        first, second = readings[2 * k], readings[2 * k + 1]
        if first is not None and second is not None:
            out[k] = warp_to(images[2 * k], first.landmarks[:, :2], second.landmarks[:, :2])
    return out


def pair_sheet(shown: list[tuple[str, np.ndarray, np.ndarray]], values: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` same-seed pairs of each (method, renders, distances), four pairs a row, the methods' rows
    of the same pairs one under the other; each frame captioned with its requested yaw and smile."""
    from surrogate.sheet import contact_sheet

    yaw, smile = DEFAULT_SCHEMA.index("yaw"), DEFAULT_SCHEMA.index("AU12")
    images, captions = [], []
    for group in range(0, n, 4):
        for method, renders, same in shown:
            for k in range(2 * group, 2 * min(group + 4, n)):
                images.append(renders[k])
                captions.append([f"{method.rsplit('/', 1)[-1]} #{k // 2}{'ab'[k % 2]}"
                                 + (f"  dlib {same[k // 2]:.2f}" if k % 2 == 0 else ""),
                                 f"yaw {values[k, yaw]:+.0f}  AU12 {values[k, smile]:.1f}"])
    return contact_sheet(images, captions, columns=8, cell=160)

if __name__ == "__main__":
    main()
