"""How much of MediaPipe's reading survives at the sizes served: the ceiling of any "requested vs read" r.

A portrait corpus's labels are MediaPipe's readings of its 512 px frames; its ``images64g`` (64 px grey)
and ``images128c`` (128 px colour) folders hold the same faces framed and shrunk as surrogates are. Each
small copy (and the 128 px one greyed: the photoreal default) is read again, and the Pearson r against
the 512 px reading is printed per attribute. A surrogate read at full size with r_full against its request
reads at a small size with about r_full x (this r), so this r bounds every fidelity figure measured at
that size, for any method.

    PYTHONPATH=. .venv/bin/python benchmarks/reader_resolution.py --corpus data/portraits_p2 --rows 9232:9832
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

NAMES = ("yaw", "pitch", "roll", "AU04", "AU05", "AU07", "AU12", "AU23")
# (folder, grey it here): the 128 px grey copy is the photoreal default, cut from the colour crop as surrogates are
COPIES = (("images64g", False), ("images128c", True), ("images128c", False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="a portrait corpus part (attributes.csv, images64g/, ...)")
    parser.add_argument("--rows", default="9232:9832", help="start:stop of its attributes.csv (held-out rows)")
    args = parser.parse_args()

    from PIL import Image

    from surrogate.face_align import to_gray
    from surrogate.landmarks import MediaPipeEstimator
    from surrogate.stats import pearson

    corpus = Path(args.corpus)
    start, stop = (int(x) for x in args.rows.split(":"))
    with open(corpus / "attributes.csv", newline="") as handle:
        records = list(csv.DictReader(handle))[start:stop]
    labels = np.array([[float(r[n]) for n in NAMES] for r in records])
    reader = MediaPipeEstimator()
    print(f"{len(records)} portraits, rows {args.rows} of {corpus}: r against MediaPipe's reading at 512 px")
    print("| copy | found | " + " | ".join(NAMES) + " |")
    print("|" + "---|" * (2 + len(NAMES)))
    for folder, grey in COPIES:
        images = np.stack([np.asarray(Image.open(corpus / folder / Path(r["file"]).name)) for r in records])
        if grey:
            images = np.stack([to_gray(image) for image in images])
        read = reader.predict(images)
        found = reader.found
        r = [pearson(labels[found, k], read[found, reader.schema.index(n)]) for k, n in enumerate(NAMES)]
        name = f"{folder} grey" if grey else folder
        print(f"| {name} | {found.mean():.1%} | " + " | ".join(f"{x:.3f}" for x in r) + " |", flush=True)


if __name__ == "__main__":
    main()
