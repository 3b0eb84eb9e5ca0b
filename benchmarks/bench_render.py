"""Render throughput of the 3-D face model: faces per second at a given size (default 64 x 64).

    .venv/bin/python benchmarks/bench_render.py [--size 64] [--batch 64] [--repeats 5] [--threads 1] [--face-model ict]

Random identities, expressions, poses and lighting, rendered with ``render_batch``; prints the median
wall-clock rate over repeats (the machine is shared, so the median is more honest than the mean or the
best), and the rate per CPU-second of this process, which is what one free core delivers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="faces per render_batch call")
    parser.add_argument("--batches", type=int, default=4, help="render_batch calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="set OMP/BLAS threads (before numpy loads)")
    parser.add_argument("--rgb", action="store_true")
    parser.add_argument("--face-model", choices=("parametric", "ict"), default="parametric")
    args = parser.parse_args()
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    import numpy as np

    from surrogate.face_model import N_IDENTITY, SUPPORTED_AUS, FaceParams, face_model
    from surrogate.render import render_batch

    rng = np.random.default_rng(0)

    def random_params() -> FaceParams:
        aus = {a: float(rng.uniform(0, 5)) for a in rng.choice(SUPPORTED_AUS, size=3, replace=False)}
        return FaceParams(
            yaw=float(rng.normal(0, 15)), pitch=float(rng.normal(0, 8)), roll=float(rng.normal(0, 5)),
            aus=aus, gender=float(rng.uniform()), identity=rng.standard_normal(N_IDENTITY),
            skin=float(rng.uniform()), light_azimuth=float(rng.normal(0, 30)),
        )

    if args.face_model == "ict":
        from surrogate.ict_model import ict_model, render_ict_batch

        ict_model()
        render_batch = render_ict_batch  # noqa: F811 - same signature, the other face model
    else:
        face_model()
    batches = [[random_params() for _ in range(args.batch)] for _ in range(args.batches)]
    render_batch(batches[0], args.size, rgb=args.rgb)  # warm-up
    rates, cpu_rates = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for batch in batches:
            render_batch(batch, args.size, rgb=args.rgb)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        rates.append(args.batch * args.batches / elapsed)
        cpu_rates.append(args.batch * args.batches / cpu)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.face_model} model, size {args.size} {'rgb' if args.rgb else 'grey'}, batch {args.batch}: "
          f"median {statistics.median(rates):.0f} faces/s (min {min(rates):.0f}, max {max(rates):.0f}) "
          f"over {args.repeats} repeats; {statistics.median(cpu_rates):.0f} faces per CPU-second "
          f"(this process's CPU time: what a free core gives); load average {load:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
