"""HTTP /synthesize throughput and latency under load (locust, headless), per backend, vs in-process onnxruntime.

Run:  .venv/bin/python benchmarks/bench_service.py [--repository model_repository] [--duration 15]
      [--users 1,4,16] [--records 8] [--backend embedded,triton] [--triton-protocol grpc]
It measures the generator alone through onnxruntime in this process at several batch sizes (the
baseline), then, for each backend, starts `bentoml serve` on a free 127.0.0.1 port and runs locust
headless at each concurrency level, each request asking for --records images (JSON, base64 PNGs):

* embedded: the service runs the models with onnxruntime in its worker;
* triton:   the real `tritonserver` (nvidia-pytriton, in .venv-triton, created by
            scripts/triton_env.sh when missing) serves the Python-backend variant of --repository
            on 127.0.0.1, and the service runs with SURROGATE_BACKEND=triton over gRPC (or HTTP).

It prints one table (backend, users, images/s, ratio to the best in-process figure, p50/p99 latency,
p99/p50, errors), then, per backend, one paced run at half of the saturation throughput (the best
images/s of that backend's sweep, offered as Poisson arrivals) with its p99/p50, against the target
p99 <= 3 x p50.
Every run is bounded in time and every server is stopped in `finally`.
Without --repository it uses the demo models (service.demo_models; 64x64, random weights).
This file is also the locustfile (the SynthesizeUser class).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.testing import EXAMPLE_RECORD as RECORD  # noqa: E402 - after the sys.path entry
from service.testing import ServiceStartError, running_service  # noqa: E402

BACKENDS = ("embedded", "triton")
P99_OVER_P50_TARGET = 3.0
# Per-user request rate of a paced (open-loop-like) run; 0 = back to back (closed loop, saturating).
USER_RATE_ENV = "BENCH_USER_RATE"
RECORDS_ENV = "BENCH_RECORDS"

if __name__ != "__main__":  # imported by locust as its locustfile (importing locust monkey-patches gevent)
    from locust import HttpUser, task

    class SynthesizeUser(HttpUser):
        """One client that asks for BENCH_RECORDS surrogates per request, back to back or paced."""

        rate = float(os.environ.get(USER_RATE_ENV, "0"))

        def on_start(self) -> None:
            # Paced users start at random phases, so that their requests do not arrive in lockstep.
            if self.rate > 0:
                self._next_start = time.monotonic() + random.uniform(0.0, 1.0 / self.rate)
                time.sleep(self._next_start - time.monotonic())  # gevent-patched under locust: cooperative

        def wait_time(self) -> float:
            """0 (back to back) or, when paced, Poisson arrivals at ``rate``: the next request is due an
            exponential gap after the previous one was due, whatever that one's latency was."""
            if self.rate <= 0:
                return 0.0
            self._next_start += random.expovariate(self.rate)
            return max(0.0, self._next_start - time.monotonic())

        @task
        def synthesize(self) -> None:
            records = int(os.environ.get(RECORDS_ENV, "8"))
            seed = int(time.time_ns() % 1_000_000_000)
            self.client.post(
                "/synthesize", json={"records": [RECORD] * records, "seed": seed, "format": "json"}
            )


@dataclass(frozen=True)
class LoadResult:
    """One locust run: what it asked for, what came back, how long it took."""

    backend: str
    users: int
    requests: int
    errors: int
    requests_per_s: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    offered_requests_per_s: float | None = None  # None: closed loop (users send back to back)

    @property
    def tail_ratio(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms > 0 else float("inf")


def in_process_images_per_s(
    repository: Path, batch_sizes: list[int], seconds: float = 2.0
) -> dict[int, float]:
    """Generator images/s through onnxruntime in this process (the runtime's embedded backend), by batch size."""
    import numpy as np

    from surrogate.noise import z_batch
    from surrogate.runtime import OnnxRuntimeBackend
    from surrogate.schema import DEFAULT_SCHEMA

    backend = OnnxRuntimeBackend(repository)
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
    backend.close()
    return rates


def run_locust(
    url: str,
    backend: str,
    users: int,
    duration: int,
    records: int,
    out: Path,
    *,
    user_rate: float = 0.0,
) -> LoadResult:
    """One headless locust run of ``users`` SynthesizeUsers for ``duration`` s (killed if it overruns).

    ``user_rate`` > 0 paces each user to that many requests/s on average (Poisson arrivals)."""
    prefix = out / f"{backend}-u{users}{'-paced' if user_rate > 0 else ''}"
    env = dict(os.environ, **{RECORDS_ENV: str(records), USER_RATE_ENV: repr(user_rate)})
    command = [sys.executable, "-m", "locust", "-f", __file__, "--headless", "-u", str(users), "-r", str(users),
               "-t", f"{duration}s", "--stop-timeout", "10", "--host", url, "--csv", str(prefix),
               "--only-summary", "--loglevel", "WARNING"]
    try:
        subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"locust ({backend}, {users} users) did not stop within {duration + 60} s") from None
    try:
        with open(f"{prefix}_stats.csv") as handle:
            row = next(r for r in csv.DictReader(handle) if r["Name"] == "/synthesize")
    except (OSError, StopIteration):
        raise SystemExit(f"locust ({backend}, {users} users) wrote no /synthesize statistics to "
                         f"{prefix}_stats.csv (is locust installed in {sys.executable}?)") from None
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    requests_per_s = float(row["Requests/s"])
    return LoadResult(
        backend=backend,
        users=users,
        requests=requests,
        errors=failures,
        requests_per_s=requests_per_s,
        images_per_s=requests_per_s * records * (requests - failures) / max(requests, 1),
        p50_ms=_milliseconds(row["50%"]),
        p99_ms=_milliseconds(row["99%"]),
        offered_requests_per_s=user_rate * users if user_rate > 0 else None,
    )


def _milliseconds(text: str) -> float:
    """A locust percentile cell ("N/A" when no request finished)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def half_saturation_run(
    url: str, backend: str, sweep: list[LoadResult], duration: int, records: int, out: Path
) -> LoadResult | None:
    """Offer half of the best request rate of ``sweep`` as Poisson arrivals and measure.

    Closed-loop users always push the server to its limit, so "half of saturation" needs a paced run.
    It uses twice the saturating run's users, so that arrivals rarely wait for a free user (which
    would hide queueing), each sending rate / (2 x users) requests per second on average."""
    successful = [r for r in sweep if r.requests > r.errors]
    if not successful:
        return None
    saturated = max(successful, key=lambda r: r.images_per_s)
    successful_rate = saturated.requests_per_s * (saturated.requests - saturated.errors) / saturated.requests
    users = 2 * saturated.users
    return run_locust(url, backend, users, duration, records, out, user_rate=successful_rate / (2 * users))


@contextlib.contextmanager
def backend_environment(
    backend: str, repository: Path, work: Path, *, protocol: str, threads: int, instances: int
) -> Iterator[dict[str, str]]:
    """The service's environment for ``backend``; for triton, a running tritonserver behind it."""
    if backend == "embedded":
        yield {}
        return
    sys.path.insert(0, str(ROOT / "tests"))  # the Triton server harness is test support
    from triton_harness import TritonInstallation, default_triton_venv, serving

    try:
        TritonInstallation.find(default_triton_venv())
    except FileNotFoundError:
        print(f"no Triton venv at {default_triton_venv()}: creating it with scripts/triton_env.sh "
              "(needs the package index)", flush=True)
    with serving(repository, work, threads=threads, instances=instances) as server:
        url = server.grpc_url if protocol == "grpc" else server.http_url
        yield {"SURROGATE_BACKEND": "triton", "SURROGATE_TRITON_URL": url, "SURROGATE_TRITON_PROTOCOL": protocol}


def format_row(result: LoadResult, best_in_process: float) -> str:
    return (f"{result.backend:<8} {result.users:>5} {result.requests:>8} {result.errors:>6} "
            f"{result.images_per_s:>9.0f} {result.images_per_s / best_in_process:>6.2f} "
            f"{result.p50_ms:>7.0f} {result.p99_ms:>7.0f} {result.tail_ratio:>7.1f}")


TABLE_HEADER = (f"{'backend':<8} {'users':>5} {'requests':>8} {'errors':>6} {'images/s':>9} {'ratio':>6} "
                f"{'p50 ms':>7} {'p99 ms':>7} {'p99/p50':>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repository", type=Path, default=None,
                        help="exported model repository (default: demo models, 64x64 random weights)")
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per run")
    parser.add_argument("--users", default="1,4,16", help="concurrency levels (comma-separated)")
    parser.add_argument("--records", type=int, default=8, help="images per request")
    parser.add_argument("--backend", default="embedded,triton",
                        help="comma-separated backends to measure: embedded, triton")
    parser.add_argument("--triton-protocol", choices=("grpc", "http"), default="grpc",
                        help="transport between the service and Triton")
    parser.add_argument("--triton-threads", type=int, default=0,
                        help="onnxruntime threads per Triton model instance (0 = onnxruntime's default, "
                             "as the embedded backend)")
    parser.add_argument("--triton-instances", type=int, default=1, help="Triton instances per model")
    parser.add_argument("--no-half", action="store_true", help="skip the paced run at half of saturation")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        parser.error(f"--backend: unknown {unknown}; choose from {', '.join(BACKENDS)}")
    try:
        levels = [int(u) for u in args.users.split(",")]
    except ValueError:
        parser.error(f"--users must be comma-separated integers, got {args.users!r}")
    if args.duration < 1 or args.records < 1 or min(levels) < 1:
        parser.error("--duration, --records and every --users level must be >= 1")

    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    repository = args.repository
    if repository is None:
        from service.demo_models import write_demo_repository

        repository = write_demo_repository(work / "model_repository", size=64)
    repository = repository.resolve()
    baseline = in_process_images_per_s(repository, [1, 8, 32, 128])
    best = max(baseline.values())
    print("in-process onnxruntime generator (images/s by batch size):",
          ", ".join(f"b{b}: {r:.0f}" for b, r in baseline.items()), flush=True)
    print(f"locust: {args.duration} s per run, {args.records} images per request, work dir {work}", flush=True)
    print(TABLE_HEADER, flush=True)

    half_rows: dict[str, LoadResult | None] = {}
    for backend in backends:
        try:
            with (
                backend_environment(backend, repository, work, protocol=args.triton_protocol,
                                    threads=args.triton_threads, instances=args.triton_instances) as env,
                running_service({**env, "SURROGATE_MAX_CONCURRENCY": "256"}, repository,
                                log_path=work / f"serve-{backend}.log", timeout_s=180) as url,
            ):
                sweep = []
                for users in levels:
                    sweep.append(run_locust(url, backend, users, args.duration, args.records, work))
                    print(format_row(sweep[-1], best), flush=True)
                if not args.no_half:
                    half_rows[backend] = half_saturation_run(url, backend, sweep, args.duration, args.records, work)
        except (ServiceStartError, RuntimeError, TimeoutError) as exc:
            print(f"{backend}: not measured: {exc}", flush=True)

    if half_rows:
        print(f"\nat half of saturation (paced; target p99 <= {P99_OVER_P50_TARGET:.0f} x p50):")
        print(f"{'backend':<8} {'users':>5} {'offered r/s':>11} {'images/s':>9} {'errors':>6} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'p99/p50':>7}  target")
        for backend, r in half_rows.items():
            if r is None:
                print(f"{backend:<8} no successful request in the sweep, nothing to pace")
                continue
            verdict = ("met" if r.tail_ratio <= P99_OVER_P50_TARGET
                       else f"missed by {r.tail_ratio / P99_OVER_P50_TARGET - 1:.0%}")
            print(f"{backend:<8} {r.users:>5} {r.offered_requests_per_s:>11.1f} {r.images_per_s:>9.0f} "
                  f"{r.errors:>6} {r.p50_ms:>7.0f} {r.p99_ms:>7.0f} {r.tail_ratio:>7.1f}  {verdict}")


if __name__ == "__main__":
    main()
