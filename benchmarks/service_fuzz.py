"""Fuzz every endpoint of the running service with generated requests; count statuses (target: 0 x 5xx).

Run:  .venv/bin/python benchmarks/service_fuzz.py [--requests 10000] [--concurrency 8] [--seed 0]
      [--repository model_repository]
It starts `bentoml serve` on a free 127.0.0.1 port (demo models without --repository), sends
--requests generated requests (JSON bodies near-valid and random, multipart attribute files and images,
raw image bodies, base64 images; corrupt images made by mutating valid PNG/JPEG/TIFF/PPM files; huge
integers, deep nesting, many keys, wrong content types, unknown paths) from --concurrency clients, and
prints the status counts per endpoint. A connection reset or a timeout counts as a failure too. Every
run is bounded (each request has a 120 s timeout) and the server is stopped at the end; exit status 1
when any 5xx, reset or timeout was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from service.testing import EXAMPLE_RECORD as RECORD  # noqa: E402

NAMES = list(RECORD)


@dataclass
class FuzzRequest:
    """One generated request: method, path, headers, and a body (bytes) or multipart parts."""

    kind: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    parts: list[tuple[str, str | None, bytes]] | None = None  # (name, filename or None for a field, data)


def seed_images(rng: random.Random) -> list[bytes]:
    """Small valid files of several formats and modes: the material that mutations corrupt."""
    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    files = []
    for fmt, mode in (("PNG", "RGB"), ("PNG", "L"), ("PNG", "1"), ("PNG", "I;16"), ("JPEG", "RGB"),
                      ("TIFF", "RGB"), ("TIFF", "LAB"), ("PPM", "RGB"), ("BMP", "RGB"), ("GIF", "P")):
        image = Image.fromarray(pixels)
        image = Image.new(mode, image.size) if mode in ("LAB", "I;16") else image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        files.append(buffer.getvalue())
    return files


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A corrupt variant of ``data``: flipped, inserted, deleted, truncated or repeated bytes."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        at = rng.randrange(max(1, len(data)))
        if choice < 0.4 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif choice < 0.55:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice < 0.7:
            del data[at:at + rng.randint(1, 16)]
        elif choice < 0.8:
            data = data[:at]
        elif choice < 0.9 and len(data) > 32:  # header fields (sizes, modes) are in the first bytes
            data[rng.randrange(8, 32)] = rng.choice([0, 1, 0x7F, 0x80, 0xFF])
        else:
            data[at:at] = data[at:at + 64] * rng.randint(1, 20)
    return bytes(data)


def json_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.random()
    if depth > 3 or choice < 0.5:
        return rng.choice([None, True, False, 0, -1, 1.5, 1e308, -1e308, 2**64, "", "x", "=1+1", "é", [], {}])
    if choice < 0.75:
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["records", "seed", "n", "images", "image", "x"]): json_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def near_valid_record(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = dict(RECORD)
    for _ in range(rng.randint(0, 3)):
        name = rng.choice([*NAMES, "AU99", "id"])
        record[name] = rng.choice([None, "left", -1e9, 1e9, 0, 3.5, "nan", [], {}, 10 ** rng.randint(1, 600)])
    if rng.random() < 0.2:
        record.pop(rng.choice(NAMES), None)
    return record


def attribute_file(rng: random.Random) -> tuple[str, bytes]:
    """A CSV or JSON attribute file, near-valid or hostile (formula ids, huge numbers, deep nesting)."""
    rows = rng.randint(0, 6)
    ids = ["a", "=cmd|' /C calc'!A0", "+1", "@x", "-2", "\tx", "ok"]
    if rng.random() < 0.5:
        lines = ["id," + ",".join(NAMES)]
        for r in range(rows):
            values = [str(near_valid_record(rng).get(n, "")) for n in NAMES]
            lines.append(f'"{rng.choice(ids)}{r}",' + ",".join(values))
        text = "\n".join(lines).encode()
        return "faces.csv", mutate(text, rng) if rng.random() < 0.3 else text
    choice = rng.random()
    if choice < 0.1:
        depth = rng.choice([100, 10_000, 100_000])
        return "faces.json", ("[" * depth + "]" * depth).encode()
    if choice < 0.2:
        return "faces.json", f'[{{"id": "a", "yaw": {"9" * rng.choice([400, 5000])}}}]'.encode()
    records = [dict(near_valid_record(rng), id=rng.choice(ids)) for _ in range(rows)]
    return "faces.json", json.dumps(records, default=str).encode()


def image_payload(rng: random.Random, seeds: list[bytes]) -> bytes:
    choice = rng.random()
    if choice < 0.15:
        return rng.choice(seeds)
    if choice < 0.9:
        return mutate(rng.choice(seeds), rng)
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 256)))


def generate(rng: random.Random, seeds: list[bytes]) -> FuzzRequest:
    """One request of a random kind, over every endpoint and every body kind."""
    kind = rng.choice(["json_synth", "json_random", "multipart_synth", "multipart_images", "raw_image",
                       "base64_images", "numbers", "many_keys", "content_type", "unknown_path"])
    json_headers = {"content-type": "application/json"}
    if kind == "json_synth":
        body = {"records": [near_valid_record(rng) for _ in range(rng.randint(0, 4))],
                "seed": rng.choice([0, 1, 2**63, -1]), "n": rng.choice([0, 1, 2, -1, 100]),
                "method": rng.choice(["gan", "3d", "x"]), "format": rng.choice(["auto", "json", "png", "gif"])}
        if rng.random() < 0.3:
            body["seeds"] = [rng.choice([0, 5, -1, 2**70]) for _ in range(rng.randint(0, 4))]
        return FuzzRequest(kind, "POST", "/synthesize", json_headers, json.dumps(body, default=str).encode())
    if kind == "json_random":
        path = rng.choice(["/synthesize", "/extract", "/anonymize"])
        return FuzzRequest(kind, "POST", path, json_headers, json.dumps(json_value(rng)).encode())
    if kind == "multipart_synth":
        name, data = attribute_file(rng)
        fields = [("n", None, rng.choice([b"0", b"1", b"2", b"-1", b"x", b"99999999999999999999999"])),
                  ("seed", None, rng.choice([b"0", b"7", b"18446744073709551615", b""])),
                  ("format", None, rng.choice([b"auto", b"json", b"canonical", b"openface", b"nope"]))]
        return FuzzRequest(kind, "POST", "/synthesize", parts=[("file", name, data), *rng.sample(fields, 2)])
    if kind == "multipart_images":
        path = rng.choice(["/extract", "/anonymize"])
        count = rng.randint(0, 5) if path == "/extract" else rng.choice([0, 1, 1, 1, 2])
        parts: list[tuple[str, str | None, bytes]] = [
            ("image", f"{i}.png", image_payload(rng, seeds)) for i in range(count)
        ]
        parts.append(("aligned", None, rng.choice([b"true", b"false", b"maybe"])))
        return FuzzRequest(kind, "POST", path, parts=parts)
    if kind == "raw_image":
        path = rng.choice(["/extract", "/anonymize"]) + rng.choice(["", "?aligned=true", "?seed=-1"])
        content_type = rng.choice(["image/png", "image/jpeg", "image/tiff", "application/octet-stream"])
        return FuzzRequest(kind, "POST", path, {"content-type": content_type}, image_payload(rng, seeds))
    if kind == "base64_images":
        images = [base64.b64encode(image_payload(rng, seeds)).decode() for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.1:
            images[0] = "not base64!"
        if rng.random() < 0.5:
            return FuzzRequest(kind, "POST", "/extract", json_headers,
                               json.dumps({"images": images, "aligned": rng.random() < 0.7}).encode())
        body = {"image": images[0], "aligned": True, "seed": rng.choice([0, 3]), "format": rng.choice(["json", "png"])}
        return FuzzRequest(kind, "POST", "/anonymize", json_headers, json.dumps(body).encode())
    if kind == "numbers":
        huge = "9" * rng.choice([30, 400, 4300, 5000])
        path = rng.choice(["/synthesize", "/extract", "/anonymize"])
        text = rng.choice([f'{{"records": [{{"yaw": {huge}}}], "seed": {huge}}}', f'{{"n": {huge}}}',
                           "[" * rng.choice([999, 5000, 100_000]), f'{{"seed": -{huge}}}', f'{{"images": [{huge}]}}'])
        return FuzzRequest(kind, "POST", path, json_headers, text.encode())
    if kind == "many_keys":
        keys = {f"k{i}": i for i in range(rng.choice([10, 1000, 30_000]))}
        path = rng.choice(["/synthesize", "/extract", "/anonymize"])
        return FuzzRequest(kind, "POST", path, json_headers, json.dumps({"records": [RECORD], **keys}).encode())
    if kind == "content_type":
        path = rng.choice(["/synthesize", "/extract", "/anonymize", "/models"])
        content_type = rng.choice(["text/csv", "", "multipart/form-data", "multipart/form-data; boundary=x",
                                   "application/json; charset=utf-16", "image/png"])
        return FuzzRequest(kind, rng.choice(["POST", "PUT", "GET"]), path, {"content-type": content_type},
                           bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
    path = "/" + rng.choice(["PATIENT-Jane-Doe-1985", "static_content/swagger-ui-bundle.js", "x" * 300,
                             "synthesize/", "docs", "%00", f"p{rng.randrange(10**9)}"])
    return FuzzRequest(kind, rng.choice(["GET", "POST", "DELETE"]), path)


def requests(count: int, seed: int) -> Iterator[FuzzRequest]:
    rng = random.Random(seed)
    seeds = seed_images(rng)
    for _ in range(count):
        yield generate(rng, seeds)


async def send(session: Any, base_url: str, request: FuzzRequest) -> int | str:
    """The response status, or 'reset' / 'timeout' when the server gave none."""
    import aiohttp

    data: Any = request.body
    if request.parts is not None:
        form = aiohttp.FormData()
        for name, filename, payload in request.parts:
            if filename is None:
                form.add_field(name, payload.decode("latin-1"))
            else:
                form.add_field(name, payload, filename=filename, content_type="application/octet-stream")
        data = form
    try:
        async with session.request(request.method, base_url + request.path, data=data,
                                   headers=request.headers, timeout=aiohttp.ClientTimeout(total=120)) as response:
            await response.read()
            return response.status
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientError:
        return "reset"


async def run_fuzz(base_url: str, count: int, concurrency: int, seed: int) -> dict[tuple[str, str], Counter]:
    """Send ``count`` generated requests from ``concurrency`` clients; counts per (kind, path root)."""
    import aiohttp

    counts: dict[tuple[str, str], Counter] = {}
    queue = iter(requests(count, seed))

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            for request in queue:
                status = await send(session, base_url, request)
                path = "(unknown paths)" if request.kind == "unknown_path" else request.path.split("?")[0]
                key = (request.kind, path)
                counts.setdefault(key, Counter())[status] += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repository", help="model repository (default: the demo models)")
    args = parser.parse_args()

    import tempfile

    from service.demo_models import write_demo_repository
    from service.testing import running_service

    with tempfile.TemporaryDirectory() as tmp:
        repository = args.repository or write_demo_repository(Path(tmp) / "model_repository")
        env = {"OMP_NUM_THREADS": "1", "BENTOML_HOME": str(Path(tmp) / "bentoml")}
        with running_service(env, repository, log_path=Path(tmp) / "serve.log") as url:
            start = time.perf_counter()
            counts = asyncio.run(run_fuzz(url, args.requests, args.concurrency, args.seed))
            elapsed = time.perf_counter() - start
            log = (Path(tmp) / "serve.log").read_text(errors="replace")
    total: Counter = Counter()
    print(f"{'kind':<18} {'path':<22} statuses")
    for (kind, path), statuses in sorted(counts.items()):
        total.update(statuses)
        print(f"{kind:<18} {path:<22} {dict(sorted(statuses.items(), key=str))}")
    failures = sum(v for k, v in total.items() if not isinstance(k, int) or k >= 500)
    print(f"\n{sum(total.values())} requests in {elapsed:.0f} s from {args.concurrency} clients: "
          f"{dict(sorted(total.items(), key=str))}")
    print(f"5xx / resets / timeouts: {failures}; tracebacks in the server log: {log.count('Traceback')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
