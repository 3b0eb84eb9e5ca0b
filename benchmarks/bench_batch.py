"""Throughput of `surrogate synthesize-batch` on this machine (images/s, end to end: PNG + journal).

    .venv/bin/python benchmarks/bench_batch.py [--rows 512] [--threads 1] [--repository DIR]

Runs the 3-D method, and the GAN on the model repository (the trained ``gan_generator`` when one is
exported, else the service's demo generator of the same I/O, which says nothing about a trained
network's speed and is labelled as such). Every run writes into a fresh folder; a second pass over
the same folder measures the cost of a resume that has nothing left to do.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write_attributes(path: Path, rows: int) -> Path:
    from surrogate.schema import DEFAULT_SCHEMA

    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *DEFAULT_SCHEMA.names])
        for i in range(rows):
            values = [rng.uniform(s.low, s.high) for s in DEFAULT_SCHEMA.attributes]
            writer.writerow([f"row{i:06d}", *(f"{v:.3f}" for v in values)])
    return path


def run(label: str, attributes: Path, out: Path, renderer, chunk: int) -> None:  # noqa: ANN001
    from surrogate.adapters import read_attributes
    from surrogate.batch import run_batch

    table = read_attributes(attributes, schema=renderer.schema)
    start = time.perf_counter()
    result = run_batch(table.values, table.ids, out, renderer, chunk_size=chunk, progress=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = run_batch(table.values, table.ids, out, renderer, chunk_size=chunk, progress=False)
    resume = time.perf_counter() - start
    assert result.rendered == len(table) and again.rendered == 0
    print(f"{label:<42} chunk {chunk:>3}: {result.rendered / first:8.1f} images/s "
          f"({result.rendered} in {first:.2f} s); no-op resume {resume:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime / BLAS threads")
    parser.add_argument("--repository", type=Path, default=None)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from surrogate.batch import embedded_renderer
    from surrogate.synthesis import GAN_MODEL, default_repository

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        attributes = write_attributes(tmp_path / "attributes.csv", args.rows)
        print(f"{args.rows} rows, {args.threads} thread(s), cpu count {os.cpu_count()}")
        for chunk in (16, 64):
            run("3d (parametric face model, 64 px)", attributes, tmp_path / f"3d-{chunk}",
                embedded_renderer("3d"), chunk)
        repository = args.repository or default_repository()
        label = "gan (exported gan_generator)"
        if not (repository / GAN_MODEL).is_dir():
            from service.demo_models import write_demo_repository

            repository = write_demo_repository(tmp_path / "demo_repository")
            label = "gan (DEMO generator, not a trained net)"
        for chunk in (16, 64):
            renderer = embedded_renderer("gan", repository=repository)
            run(label, attributes, tmp_path / f"gan-{chunk}", renderer, chunk)


if __name__ == "__main__":
    main()
