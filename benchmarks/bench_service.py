"""HTTP /synthesize throughput and latency under load (locust, headless) vs in-process onnxruntime.

Run:  .venv/bin/python benchmarks/bench_service.py [--repository model_repository] [--duration 15]
      [--users 1,4,16] [--records 8]
It starts `bentoml serve` on a free 127.0.0.1 port (embedded backend), measures the generator alone
through onnxruntime in this process at several batch sizes (the baseline), then runs locust headless
at each concurrency level, each request asking for --records images (JSON, base64 PNGs), and prints
images/s, the ratio to the best in-process figure, p50/p99 latency and the error count.
Without --repository it uses the demo models (service.demo_models; 32x32, random weights).
This file is also the locustfile (the SynthesizeUser class).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.testing import EXAMPLE_RECORD as RECORD  # noqa: E402 - after the sys.path entry
from service.testing import ServiceProcess, ServiceStartError  # noqa: E402

try:
    from locust import HttpUser, constant, task

    class SynthesizeUser(HttpUser):
        """One client that asks for BENCH_RECORDS surrogates per request, back to back."""

        wait_time = constant(0)

        @task
        def synthesize(self) -> None:
            records = int(os.environ.get("BENCH_RECORDS", "8"))
            seed = int(time.time_ns() % 1_000_000_000)
            self.client.post(
                "/synthesize", json={"records": [RECORD] * records, "seed": seed, "format": "json"}
            )

except ImportError:  # the script part still explains what is missing
    pass


def in_process_images_per_s(
    repository: Path, batch_sizes: list[int], seconds: float = 2.0
) -> dict[int, float]:
    import numpy as np

    from service.backends import EmbeddedBackend
    from service.config import ServiceConfig
    from surrogate.noise import z_batch
    from surrogate.schema import DEFAULT_SCHEMA

    backend = EmbeddedBackend(ServiceConfig(model_repository=str(repository)))
    schema = backend.gan.schema
    values = (
        DEFAULT_SCHEMA.validate_records([RECORD])
        if schema == DEFAULT_SCHEMA
        else (schema.lows + schema.highs)[None] / 2
    )
    rates = {}
    for batch in batch_sizes:
        rows, z = np.repeat(values, batch, axis=0), z_batch(list(range(batch)))
        backend.generate(rows, z)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            backend.generate(rows, z)
            done += batch
        rates[batch] = done / (time.perf_counter() - start)
    return rates


def run_locust(url: str, users: int, duration: int, records: int, out: Path) -> dict[str, float]:
    prefix = out / f"u{users}"
    env = dict(os.environ, BENCH_RECORDS=str(records))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            __file__,
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{duration}s",
            "--host",
            url,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(f"{prefix}_stats.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "/synthesize")
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    return {
        "users": users,
        "requests": requests,
        "errors": failures,
        "images_per_s": float(row["Requests/s"]) * records * (requests - failures) / max(requests, 1),
        "p50_ms": float(row["50%"]),
        "p99_ms": float(row["99%"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repository", type=Path, default=None)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--users", default="1,4,16")
    parser.add_argument("--records", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    repository = args.repository
    if repository is None:
        from service.demo_models import write_demo_repository

        repository = write_demo_repository(work / "model_repository", size=64)
    baseline = in_process_images_per_s(repository, [1, 8, 32, 128])
    service = ServiceProcess({"SURROGATE_MAX_CONCURRENCY": "256"}, repository=repository,
                             log_path=work / "serve.log")
    try:
        with service as url:
            print(
                "in-process onnxruntime generator (images/s by batch size):",
                ", ".join(f"b{b}: {r:.0f}" for b, r in baseline.items()),
            )
            best = max(baseline.values())
            print(
                f"{'users':>5} {'requests':>8} {'errors':>6} {'images/s':>9} {'ratio':>6} "
                f"{'p50 ms':>7} {'p99 ms':>7}"
            )
            for users in [int(u) for u in args.users.split(",")]:
                r = run_locust(url, users, args.duration, args.records, work)
                print(
                    f"{r['users']:>5} {r['requests']:>8} {r['errors']:>6} {r['images_per_s']:>9.0f} "
                    f"{r['images_per_s'] / best:>6.2f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f}"
                )
    except ServiceStartError as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
