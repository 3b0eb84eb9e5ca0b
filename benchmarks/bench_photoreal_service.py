"""The service's /synthesize with method photoreal against the same surrogates rendered in-process.

A real ``bentoml serve`` on 127.0.0.1 (the repository's models); ``--requests`` requests of ``--records``
records each at ``--size`` px, one at a time, then the same records through ``surrogate.synthesis`` in this
process. Prints surrogates/s of both and their ratio (the issue's target: >= 0.7).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_photoreal_service.py --requests 4 --records 4 --size 128
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--records", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    import httpx

    from service.testing import EXAMPLE_RECORD, running_service
    from surrogate.schema import DEFAULT_SCHEMA
    from surrogate.synthesis import synthesize

    records = [dict(EXAMPLE_RECORD, yaw=float(y)) for y in np.linspace(-20, 20, args.records)]
    with running_service({"OMP_NUM_THREADS": "1"}) as url:
        body = {"records": records, "method": "photoreal", "size": args.size, "format": "json"}
        warm = httpx.post(url + "/synthesize", json={**body, "seed": 10**6}, timeout=600)
        warm.raise_for_status()
        started = time.perf_counter()
        for r in range(args.requests):
            httpx.post(url + "/synthesize", json={**body, "seed": r * args.records}, timeout=600).raise_for_status()
        served = args.requests * args.records / (time.perf_counter() - started)
    values = DEFAULT_SCHEMA.validate_records(records)
    synthesize("photoreal", values[:1], [10**6], size=args.size)
    started = time.perf_counter()
    for r in range(args.requests):
        synthesize("photoreal", values, list(range(r * args.records, (r + 1) * args.records)), size=args.size)
    local = args.requests * args.records / (time.perf_counter() - started)
    print(f"{args.requests} requests x {args.records} records at {args.size} px: service {served:.2f} surrogates/s, "
          f"in-process {local:.2f} surrogates/s, ratio {served / local:.2f}")


if __name__ == "__main__":
    main()
