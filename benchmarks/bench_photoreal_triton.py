"""Photoreal surrogates/s with the synthesis network on Triton against the same ones all in-process.

Exports the ``portrait_synthesis`` entry (``export.photoreal``) into a scratch repository, serves its
Python-backend variant (the IR through OpenVINO, float32, the embedded batch) on the real ``tritonserver``
of nvidia-pytriton (``tests/triton_harness.py``; the NGC container's OpenVINO backend is not available
here), then renders ``--records`` surrogates at ``--size`` px through ``surrogate.synthesis.synthesize`` twice:
with the embedded photoreal backend, and with ``TritonPortraitRenderer`` (mapping, edit and framing
in-process, the synthesis network on Triton: the service's Triton path without HTTP). One run each, after
both are warm; prints both rates, their ratio, the largest pixel difference and the load average.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_photoreal_triton.py --records 16 --size 128
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0,
                        help="OpenVINO threads of the Triton model instance (0: all cores, as embedded)")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    parser.add_argument("--first", choices=("embedded", "triton"), default="embedded",
                        help="which path runs first (on a shared machine the load drifts between the two runs)")
    args = parser.parse_args()

    from export.photoreal import export_photoreal
    from service.testing import EXAMPLE_RECORD
    from surrogate.schema import DEFAULT_SCHEMA
    from surrogate.synthesis import photoreal_backend, synthesize

    sys.path.insert(0, str(ROOT / "tests"))  # the Triton server harness is test support
    from triton_harness import serving

    records = [dict(EXAMPLE_RECORD, yaw=float(y)) for y in np.linspace(-20, 20, args.records)]
    values = DEFAULT_SCHEMA.validate_records(records)
    seeds = list(range(args.records))
    with tempfile.TemporaryDirectory(prefix="bench-photoreal-triton-") as scratch:
        work = Path(scratch)
        export_photoreal(work / "repository")
        with serving(work / "repository", work, threads=args.threads) as server:
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            backends = {"embedded": photoreal_backend(), "triton": photoreal_backend(triton_url=url,
                                                                                      protocol=args.protocol)}
            if args.first == "triton":
                backends = dict(reversed(backends.items()))
            rates, images = {}, {}
            for backend in backends.values():  # compile and warm both before timing either
                synthesize("photoreal", values[:4], [10**6 + k for k in range(4)], size=args.size, backend=backend)
            for name, backend in backends.items():
                started = time.perf_counter()
                images[name] = synthesize("photoreal", values, seeds, size=args.size, backend=backend)
                rates[name] = args.records / (time.perf_counter() - started)
    difference = int(np.abs(images["triton"].astype(int) - images["embedded"]).max())
    print(f"{args.records} surrogates at {args.size} px, grey: embedded {rates['embedded']:.2f}/s, "
          f"Triton ({args.protocol}, Python backend, OpenVINO) {rates['triton']:.2f}/s, "
          f"ratio {rates['triton'] / rates['embedded']:.2f}; max pixel difference {difference}; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
