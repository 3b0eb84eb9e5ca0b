"""Overload burst, worst-case probes and a bounded soak of the service on 127.0.0.1 (issue 23's targets).

Run:  .venv/bin/python benchmarks/service_soak.py [--repository model_repository] [--records 64]
      [--phase-seconds 20] [--warmup-seconds 90] [--soak-seconds 600] [--skip-soak]
      [--light-requests 4000 --light-clients 2 --light-records 8]
It starts `bentoml serve` (the shipped models by default) on a free 127.0.0.1 port and prints:

0. light load (only with --light-requests): that many small requests from 2 clients, far below
   saturation; statuses, p50/p99 and every request slower than 5 s (issue 23 point 8: 4 of ~4,160 hung);

1. probes: /livez latency (p50/p99/max) while the worst decode request of the issue runs (64 zero-filled
   4096x4096 16-bit PNGs to /extract), and the /metrics series count and size before and after 5,000
   distinct unknown paths;
2. burst: closed-loop clients each asking for --records images per request (JSON), 8 clients, then
   128, then 8 again, --phase-seconds each: statuses (a connection reset or timeout counts as such),
   goodput (images/s of 200 answers), p50/p99, goodput at 128 as % of 8, and the seconds after the burst
   until the per-second p50 is back within 1.5x the first 8-client p50;
3. soak (--warmup-seconds, then --soak-seconds, bounded): 8 valid clients, 2 clients of invalid and
   hostile requests (the fuzz generator of benchmarks/service_fuzz.py) and, every 60 s, a 10 s burst of
   64 more clients; statuses (a dropped connection as `reset <aiohttp error>`), goodput, p50/p99 of
   valid requests, and the RSS of every server process cold, after the warm-up and at the end (the
   growth target, <= 10 %, is warm -> end), with the total every 30 s.

Clients ignore Retry-After (the worst case for the server). Every phase is bounded in time and the
server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.service_fuzz import generate, seed_images, send  # noqa: E402
from service.testing import EXAMPLE_RECORD as RECORD  # noqa: E402
from service.testing import ServiceProcess  # noqa: E402


@dataclass
class Phase:
    """Outcomes of one load phase: (start, end, status) per request and images per good answer."""

    name: str
    images_per_request: int
    results: list[tuple[float, float, int | str]] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def line(self) -> str:
        statuses = Counter(status for _, _, status in self.results)
        good = [end - start for start, end, status in self.results if status == 200]
        p50, p99 = (np.percentile(good, [50, 99]) * 1000) if good else (float("nan"),) * 2
        return (f"{self.name:<22} {len(self.results):>6} requests  goodput {self.goodput():7.1f} images/s  "
                f"p50 {p50:7.0f} ms  p99 {p99:7.0f} ms  {dict(sorted(statuses.items(), key=str))}")

    def goodput(self) -> float:
        good = sum(1 for *_, status in self.results if status == 200)
        return good * self.images_per_request / max(self.ended - self.started, 1e-9)


async def closed_loop(
    session: Any, url: str, body: dict[str, Any], phase: Phase, until: float, count: int | None = None
) -> None:
    """One client: the next request as soon as the last one was answered, until ``until`` (or until the
    phase holds ``count`` results)."""
    import aiohttp

    while time.monotonic() < until and (count is None or len(phase.results) < count):
        start = time.monotonic()
        try:
            async with session.post(url + "/synthesize", json=body, timeout=aiohttp.ClientTimeout(total=120)) as r:
                answer = await r.read()
                status: int | str = r.status
                if r.status >= 500:  # which 503: the API's admission control or the worker's queue deadline
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        status = f"{r.status} {json.loads(answer)['error']['message'][:36]}"
        except TimeoutError:
            status = "timeout"
        except aiohttp.ClientError as exc:  # the type tells a reset (ClientOSError) from a clean close
            status = f"reset {type(exc).__name__}"
        phase.results.append((start, time.monotonic(), status))


async def load(url: str, clients: int, seconds: float, records: int, name: str) -> Phase:
    import aiohttp

    phase = Phase(name, records)
    body = {"records": [RECORD] * records, "seed": 1, "format": "json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        phase.started = time.monotonic()
        until = phase.started + seconds
        await asyncio.gather(*(closed_loop(session, url, body, phase, until) for _ in range(clients)))
        phase.ended = time.monotonic()
    return phase


def recovery_seconds(after: Phase, normal_p50: float) -> float | None:
    """Seconds from the start of ``after`` until a one-second window's p50 is within 1.5x ``normal_p50``."""
    for second in range(int(after.ended - after.started) + 1):
        window = [end - start for start, end, status in after.results
                  if status == 200 and after.started + second <= end < after.started + second + 1]
        if window and np.median(window) <= 1.5 * normal_p50:
            return float(second + 1)
    return None


async def probes(url: str) -> None:
    import aiohttp

    big = io.BytesIO()
    Image.fromarray(np.zeros((4096, 4096), np.uint16)).save(big, format="PNG")
    form = aiohttp.FormData()
    for i in range(64):
        form.add_field("image", big.getvalue(), filename=f"{i}.png", content_type="image/png")
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def worst() -> tuple[int, float]:
            start = time.monotonic()
            async with session.post(url + "/extract?aligned=true", data=form) as response:
                await response.read()
                return response.status, time.monotonic() - start

        task = asyncio.ensure_future(worst())
        while not task.done():
            start = time.monotonic()
            async with session.get(url + "/livez") as response:
                await response.read()
            latencies.append(time.monotonic() - start)
            await asyncio.sleep(0.05)
        status, seconds = task.result()
        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
        print(f"worst decode request (64 x 4096x4096 16-bit PNG, {len(big.getvalue()) * 64 / 1e6:.1f} MB): "
              f"{status} in {seconds:.1f} s; /livez during it: {len(latencies)} probes, p50 {p50:.0f} ms, "
              f"p99 {p99:.0f} ms, max {max(latencies) * 1000:.0f} ms")

        async def metrics() -> tuple[int, int]:
            async with session.get(url + "/metrics") as response:
                text = await response.text()
            return len([s for s in text.splitlines() if s and not s.startswith("#")]), len(text)

        async with session.get(url + "/unknown-warm-up") as response:
            await response.read()
        before = await metrics()
        statuses: Counter = Counter()
        for start in range(0, 5000, 50):
            async def one(i: int) -> None:
                async with session.get(f"{url}/PATIENT-Jane-Doe-{i}") as response:
                    await response.read()
                    statuses[response.status] += 1

            await asyncio.gather(*(one(i) for i in range(start, start + 50)))
        after = await metrics()
        print(f"5,000 distinct unknown paths {dict(statuses)}: /metrics series {before[0]} -> {after[0]}, "
              f"{before[1] / 1e3:.0f} kB -> {after[1] / 1e3:.0f} kB")


async def burst(url: str, records: int, seconds: float) -> None:
    normal = await load(url, 8, seconds, records, "8 clients")
    overload = await load(url, 128, seconds, records, "128 clients")
    after = await load(url, 8, seconds, records, "8 clients after")
    for phase in (normal, overload, after):
        print(phase.line())
    normal_p50 = float(np.median([e - s for s, e, st in normal.results if st == 200] or [float("nan")]))
    print(f"goodput at 128 clients: {100 * overload.goodput() / max(normal.goodput(), 1e-9):.0f}% of 8 clients; "
          f"back to normal p50 (<= 1.5 x {normal_p50 * 1000:.0f} ms) after {recovery_seconds(after, normal_p50)} s")


async def light(url: str, clients: int, count: int, records: int, slow_s: float) -> None:
    """``count`` requests of ``records`` images from ``clients`` closed-loop clients (far below
    saturation): issue 23 point 8 saw 4 of ~4,160 such requests hang 60 s. Prints the statuses, p50/p99,
    the slowest request, and every request slower than ``slow_s`` with its start (seconds into the run)."""
    import aiohttp

    phase = Phase(f"light {clients} clients", records)
    body = {"records": [RECORD] * records, "seed": 1, "format": "json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        phase.started = time.monotonic()
        await asyncio.gather(*(closed_loop(session, url, body, phase, float("inf"), count) for _ in range(clients)))
        phase.ended = time.monotonic()
    print(phase.line())
    slow = [(start - phase.started, end - start, status) for start, end, status in phase.results
            if end - start > slow_s]
    longest = max(end - start for start, end, _ in phase.results)
    print(f"light load: {len(slow)} of {len(phase.results)} requests slower than {slow_s:g} s "
          f"(slowest {longest:.2f} s): {[(round(a, 1), round(b, 1), c) for a, b, c in slow][:20]}")


def rss_mb(service: ServiceProcess) -> dict[str, float]:
    """RSS (MiB) of every process of the server, keyed ``pid:role`` (BentoML names each service's process
    with --service-name; the remaining one is the `bentoml serve` supervisor). A restarted process shows
    up under a new pid."""
    import psutil

    root = psutil.Process(service.process.pid)  # type: ignore[union-attr]
    rss = {}
    for process in [root, *root.children(recursive=True)]:
        command = process.cmdline()
        role = command[command.index("--service-name") + 1] if "--service-name" in command else "supervisor"
        rss[f"{process.pid}:{role}"] = process.memory_info().rss / 2**20
    return rss


async def soak(url: str, service: ServiceProcess, records: int, seconds: float, warmup_s: float) -> None:
    """``warmup_s`` then ``seconds`` of the same mixed traffic. RSS of every server process is read cold,
    after the warm-up (model sessions, thread pools, allocator arenas and caches have reached their
    working size by then) and every 30 s to the end; the growth that counts is warm -> end."""
    import aiohttp

    samples: list[tuple[float, dict[str, float]]] = [(0.0, rss_mb(service))]
    valid = Phase("soak valid", records)
    invalid: Counter = Counter()
    overload = Phase("soak overload bursts", records)
    rng = random.Random(0)
    hostile_seeds = seed_images(rng)
    valid.started = overload.started = time.monotonic()
    warm_at = valid.started + warmup_s
    until = warm_at + seconds
    body = {"records": [RECORD] * records, "seed": 1, "format": "json"}

    async def hostile(session: Any) -> None:
        while time.monotonic() < until:
            invalid[await send(session, url, generate(rng, hostile_seeds))] += 1

    async def bursts(session: Any) -> None:
        while time.monotonic() + 60 < until:
            await asyncio.sleep(50)
            end = min(until, time.monotonic() + 10)
            await asyncio.gather(*(closed_loop(session, url, body, overload, end) for _ in range(64)))

    async def sample_rss() -> None:
        await asyncio.sleep(max(0.0, warm_at - time.monotonic()))
        while time.monotonic() < until - 1:
            samples.append((time.monotonic() - valid.started, rss_mb(service)))
            await asyncio.sleep(min(30.0, max(0.0, until - 1 - time.monotonic())))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(closed_loop(session, url, body, valid, until) for _ in range(8)),
                             *(hostile(session) for _ in range(2)), bursts(session), sample_rss())
    valid.ended = overload.ended = time.monotonic()
    samples.append((valid.ended - valid.started, rss_mb(service)))
    print(f"soak: {warmup_s:.0f} s warm-up + {seconds:.0f} s; 8 valid clients, 2 hostile, 64 more for 10 s "
          "every 60 s (statuses over the whole run)")
    print(valid.line())
    print(overload.line().replace("goodput", "(goodput over the soak)"))
    print(f"soak invalid/hostile requests: {dict(sorted(invalid.items(), key=str))}")
    (_, cold), (warm_t, warm), (end_t, end) = samples[0], samples[1], samples[-1]
    for name in sorted({*cold, *end}):
        peak = max(sample.get(name, float("nan")) for _, sample in samples[1:])
        before, after = warm.get(name, float("nan")), end.get(name, float("nan"))
        print(f"RSS {name:<44} cold {cold.get(name, float('nan')):6.1f}  warm (t={warm_t:.0f} s) {before:6.1f}  "
              f"end (t={end_t:.0f} s) {after:6.1f} MiB  growth warm->end {100 * (after / before - 1):+.1f}%  "
              f"peak {peak:6.1f}")
    totals = [f"{t:.0f}s {sum(sample.values()):.0f}" for t, sample in samples]
    print(f"RSS of all server processes over time (MiB): {', '.join(totals)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", default=str(ROOT / "model_repository"))
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--phase-seconds", type=float, default=20.0)
    parser.add_argument("--soak-seconds", type=float, default=600.0,
                        help="soak after the warm-up (RSS growth is measured over these seconds)")
    parser.add_argument("--warmup-seconds", type=float, default=90.0,
                        help="mixed traffic before the RSS baseline (includes one overload burst)")
    parser.add_argument("--light-requests", type=int, default=0,
                        help="first run this many light-load requests (issue 23 point 8); 0 skips it")
    parser.add_argument("--light-clients", type=int, default=2)
    parser.add_argument("--light-records", type=int, default=8)
    parser.add_argument("--skip-probes", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--log", help="keep the server's log here (default: a temporary file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"OMP_NUM_THREADS": "1", "BENTOML_HOME": str(Path(tmp) / "bentoml")}
        service = ServiceProcess(env, repository=args.repository, log_path=args.log or Path(tmp) / "serve.log")
        try:
            url = service.start().wait_ready()
            if args.light_requests:
                asyncio.run(light(url, args.light_clients, args.light_requests, args.light_records, 5.0))
            if not args.skip_probes:
                asyncio.run(probes(url))
            if not args.skip_burst:
                asyncio.run(burst(url, args.records, args.phase_seconds))
            if not args.skip_soak:
                asyncio.run(soak(url, service, args.records, args.soak_seconds, args.warmup_seconds))
            log = service.log_path.read_text(errors="replace")
            errors = Counter(re.findall(r"^(\w[\w.]*(?:Error|Exception|Unavailable)\b.{0,60})", log, re.M))
            print(f"server log: {log.count('Traceback')} tracebacks; most common errors: {errors.most_common(4)}")
        finally:
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
