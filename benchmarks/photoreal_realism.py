"""A realism proxy for saved photoreal renders: how far each face's dlib descriptor lies from natural portraits.

Broken surrogates (smeared, grey or melted skin) are not faces dlib's descriptor has seen, so they lie far
from every natural portrait in its 128-d space. For each render in each ``--images`` folder (a
``bench_photoreal.py --save`` folder), the mean distance to its ``--k`` nearest faces among ``--n-reference``
natural, unedited portraits (``--reference``: the portrait corpus's 128 px colour crops, e.g.
``data/portraits_p1/images128c``) is compared with the same distance of the reference faces among
themselves (leave one out): the share above the reference's 99th percentile is the proxy, over all renders
and over those asking for a near-frontal head (|yaw| < 20 degrees).

Known limits: turned heads lie further out too (the natural corpus has few faces beyond 30 degrees of yaw;
the distance correlates with the requested |yaw| at about r 0.4), so compare versions on the same vectors
and seeds, never across pools. ``--labels`` (indices judged broken by eye, one per line) adds the AUC of
the distance for those against the rest.

    PYTHONPATH=. .venv/bin/python benchmarks/photoreal_realism.py --reference data/portraits_p1/images128c \\
        --images V3_DIR V4_DIR --rows 96:296
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

NEAR_FRONTAL = 20.0  # degrees of requested |yaw|


def descriptors(identity, paths: list[Path]) -> np.ndarray:
    from PIL import Image

    faces = [np.asarray(Image.open(p).convert("RGB").resize((128, 128), Image.BILINEAR)) for p in paths]
    return identity.describe(faces)[0]


def knn_distance(queries: np.ndarray, reference: np.ndarray, k: int, leave_one_out: bool = False) -> np.ndarray:
    distance = np.linalg.norm(queries[:, None] - reference[None], axis=2)
    if leave_one_out:
        np.fill_diagonal(distance, np.inf)
    return np.sort(distance, axis=1)[:, :k].mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", required=True, help="bench_photoreal.py --save folders")
    parser.add_argument("--reference", required=True, help="a folder of natural portrait crops (PNG)")
    parser.add_argument("--n-reference", type=int, default=1000)
    parser.add_argument("--rows", default="0:500", help="rows start:stop of each folder's attributes.csv")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--labels", default=None, help="a file of row indices judged broken, one per line")
    args = parser.parse_args()

    from surrogate.face_identity import DlibIdentity
    from surrogate.stats import auc, pearson

    identity = DlibIdentity()
    reference_paths = sorted(Path(args.reference).glob("*.png"))[: args.n_reference]
    if len(reference_paths) <= args.k:
        raise SystemExit(f"{args.reference}: need more than {args.k} reference portraits, found {len(reference_paths)}")
    reference = descriptors(identity, reference_paths)
    threshold = float(np.percentile(knn_distance(reference, reference, args.k, leave_one_out=True), 99))
    start, stop = (int(x) for x in args.rows.split(":"))
    broken = {int(line) for line in Path(args.labels).read_text().split()} if args.labels else set()
    print(f"reference: {len(reference)} portraits of {args.reference}; its own {args.k}-NN distance, "
          f"99th percentile {threshold:.3f}")
    print("| renders | faces | median distance | above the reference's 99th percentile | of those asking "
          f"|yaw| < {NEAR_FRONTAL:g} | r with requested |yaw| |" + (" AUC of the labelled broken |" if broken else ""))
    print("|---|---|---|---|---|---|" + ("---|" if broken else ""))
    for folder in map(Path, args.images):
        with open(folder / "attributes.csv", newline="") as handle:
            records = list(csv.DictReader(handle))[start:stop]
        distance = knn_distance(descriptors(identity, [folder / r["file"] for r in records]), reference, args.k)
        yaw = np.abs([float(r["yaw"]) for r in records])
        near = yaw < NEAR_FRONTAL  # where turned heads do not confound the proxy
        cells = [str(folder), str(len(records)), f"{np.median(distance):.3f}", f"{(distance > threshold).mean():.1%}",
                 f"{(distance[near] > threshold).mean():.1%} of {near.sum()}", f"{pearson(distance, yaw):.2f}"]
        if broken:
            labels = np.array([int(r["id"]) in broken for r in records])
            cells.append(f"{auc(distance, labels):.3f} ({labels.sum()} labelled)")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
