"""How fast a large OpenFace CSV converts (the brief: 100k rows x 714 columns in seconds).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adapters_throughput.py [--rows 100000]

Writes a synthetic FeatureExtraction CSV (full upstream header, leading-space names) to a temp folder,
then times ``read_attributes`` and ``write_canonical_csv`` and prints rows/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "attributes"))

from make_fixtures import openface_header  # noqa: E402

from surrogate.adapters import read_attributes, write_canonical_csv  # noqa: E402


def write_openface_csv(path: Path, rows: int, seed: int = 0) -> None:
    header = openface_header(sequence=True, face_id=True)
    rng = np.random.default_rng(seed)
    index = {name: i for i, name in enumerate(header)}
    block = rng.uniform(0, 100, size=(rows, len(header))).round(3)
    block[:, index["frame"]] = np.arange(1, rows + 1)
    block[:, index["face_id"]] = 0
    block[:, index["confidence"]] = rng.uniform(0.5, 1.0, rows).round(3)
    block[:, index["success"]] = rng.uniform(size=rows) > 0.05
    for name in ("pose_Rx", "pose_Ry", "pose_Rz"):
        block[:, index[name]] = rng.normal(0, 0.2, rows).round(6)
    for name in header:
        if name.endswith("_r"):
            block[:, index[name]] = rng.uniform(0, 5, rows).round(2)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(", ".join(header) + "\n")
        for start in range(0, rows, 5000):
            chunk = block[start:start + 5000]
            handle.write("\n".join(", ".join(f"{v:g}" for v in row) for row in chunk) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "session.csv"
        t0 = time.perf_counter()
        write_openface_csv(source, args.rows)
        size_mb = source.stat().st_size / 1e6
        print(f"wrote {args.rows} rows x {len(openface_header(sequence=True, face_id=True))} columns "
              f"({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        table = read_attributes(source)
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_canonical_csv(table, Path(tmp) / "out.csv")
        write_s = time.perf_counter() - t0
        print(f"read_attributes: {read_s:.2f} s ({args.rows / read_s:,.0f} rows/s, "
              f"{size_mb / read_s:.0f} MB/s); "
              f"accepted {len(table)}, rejected {len(table.rejected)} {table.rejected_by_kind()}")
        print(f"write_canonical_csv: {write_s:.2f} s")


if __name__ == "__main__":
    main()
