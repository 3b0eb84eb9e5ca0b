"""What the photoreal method's read-and-correct rounds cost: surrogates/s at 128 px by number of rounds.

The same vectors and seeds are rendered in-process with 0, 1 and 2 refinement rounds (the shipped method
uses ``surrogate.photoreal.REFINE_ROUNDS``), the settings alternating ``--repeats`` times so that a shared
machine's load falls on each alike; printed as surrogates/s and as the ratio to the closed-form edit.

    PYTHONPATH=. .venv/bin/python benchmarks/photoreal_refine_cost.py --records 16 --repeats 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.bench_photoreal import EVALUATION_SEED_BASE
from surrogate.schema import DEFAULT_SCHEMA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", default="0,1,2")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    from surrogate.photoreal import PhotorealBackend
    from surrogate.runtime import generate_images
    from surrogate.synthesis import photoreal_images

    rng = np.random.default_rng(3)
    values = DEFAULT_SCHEMA.clip(rng.uniform(DEFAULT_SCHEMA.lows, DEFAULT_SCHEMA.highs,
                                             (args.records, len(DEFAULT_SCHEMA))).astype(np.float32))
    seeds = [EVALUATION_SEED_BASE + 10_000 + i for i in range(args.records)]
    rounds = [int(r) for r in args.rounds.split(",")]
    backends = {r: PhotorealBackend(refine=r) for r in rounds}
    for backend in backends.values():  # compile, the mean w and the reader, outside the timing
        generate_images(backend, values[:1], seeds[:1])
    seconds = {r: 0.0 for r in rounds}
    for _ in range(args.repeats):
        for r in rounds:
            started = time.perf_counter()
            photoreal_images(generate_images(backends[r], values, seeds), size=args.size)
            seconds[r] += time.perf_counter() - started
    n = args.records * args.repeats
    base = n / seconds[rounds[0]]
    for r in rounds:
        rate = n / seconds[r]
        print(f"{r} round(s): {rate:.2f} surrogates/s at {args.size} px ({rate / base:.2f} x {rounds[0]} rounds)")


if __name__ == "__main__":
    main()
