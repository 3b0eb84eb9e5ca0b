"""Issue 23: the service under overload, hostile input and slow clients (one test per class of failure).

Most classes run in-process (the Starlette app over a LocalEngine on the demo models, fast); what needs
BentoML itself (its metrics middleware, uvicorn's connections, /livez) runs against one real
`bentoml serve` on 127.0.0.1. The fuzz and soak runs are scripts in benchmarks/ (service_fuzz.py,
service_soak.py); a small fuzz sample is a test here.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import logging
import re
import socket
import struct
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("bentoml")

from starlette.testclient import TestClient  # noqa: E402

from service.config import Limits, ServiceConfig  # noqa: E402
from service.demo_models import write_demo_repository  # noqa: E402
from service.http_app import LocalEngine, SurrogateAPI  # noqa: E402
from service.testing import EXAMPLE_RECORD, running_service  # noqa: E402
from surrogate.imageio import encode_png  # noqa: E402
from surrogate.runtime import OnnxRuntimeBackend  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402

RECORD = EXAMPLE_RECORD
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_repository(tmp_path_factory.mktemp("repo") / "model_repository")


@pytest.fixture(scope="module")
def backend(repository: Path) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(repository, intra_op_threads=1)


def in_process(backend: OnnxRuntimeBackend, engine: LocalEngine | None = None, **config: object) -> TestClient:
    """The API app in this process; server errors come back as responses, as a client would see them."""
    api = SurrogateAPI(lambda: engine or LocalEngine(backend), ServiceConfig(**config))  # type: ignore[arg-type]
    client = TestClient(api.app(), raise_server_exceptions=False)
    client.api = api  # type: ignore[attr-defined]
    return client


def assert_documented_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert error["status"] == status and isinstance(error["message"], str)
    return error


# -- 1. overload ---------------------------------------------------------------------------------------
class OverloadedWorker(LocalEngine):
    """The BentoML worker proxy's answer when its queue is past max_latency_ms."""

    calls = 0

    async def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        from bentoml.exceptions import ServiceUnavailable

        OverloadedWorker.calls += 1
        raise ServiceUnavailable("process is overloaded")


def test_overload_is_503_with_retry_after_and_refused_ahead_of_the_work(backend) -> None:
    # the worker's ServiceUnavailable arrives wrapped in the render task group's ExceptionGroup
    with in_process(backend, OverloadedWorker(backend)) as client:
        response = client.post("/synthesize", json={"records": [RECORD] * 3, "seed": 1, "format": "json"})
        assert_documented_error(response, 503)
        assert response.headers["retry-after"] == "1"
    # admission control: a full image queue or full request slots refuse at once, before any model call
    engine = OverloadedWorker(backend)
    with in_process(backend, engine, max_queued_images=8, max_concurrency=2) as client:
        api = client.api  # type: ignore[attr-defined]
        calls = OverloadedWorker.calls
        api.admission.queued_images = 8
        response = client.post("/synthesize", json={"records": [RECORD], "seed": 1})
        assert_documented_error(response, 503)
        assert response.headers["retry-after"] == "1" and OverloadedWorker.calls == calls
        api.admission.queued_images = 0
        api.admission.requests = 2
        response = client.post("/synthesize", json={"records": [RECORD]})
        assert_documented_error(response, 503)
        # refused as it arrived, its body unread: the connection is closed rather than reused
        assert response.headers["retry-after"] == "1" and response.headers["connection"] == "close"
        assert OverloadedWorker.calls == calls
        api.admission.requests = 0


def test_the_image_limit_adapts_to_the_workers_speed() -> None:
    from bentoml.exceptions import ServiceUnavailable

    from service.http_app import Admission

    admission = Admission(max_requests=4, max_images=512, target_s=0.05)
    with admission.images(64):
        time.sleep(0.06)  # slower than the target: the limit shrinks
    assert admission.image_limit == pytest.approx(512 * 0.8)
    with pytest.raises(ServiceUnavailable), admission.images(64):
        raise ServiceUnavailable("process is overloaded")
    assert admission.image_limit == pytest.approx(512 * 0.4)
    with admission.images(64):
        pass  # in time: a quarter of the images back
    assert admission.image_limit == pytest.approx(512 * 0.4 + 16) and admission.queued_images == 0


# -- 2. hostile images -----------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def hostile_images() -> dict[str, bytes]:
    """Files Pillow fails on in assorted ways (not only UnidentifiedImageError)."""
    valid = encode_png(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    lab = io.BytesIO()
    Image.new("LAB", (16, 16)).save(lab, format="TIFF")
    bad_ihdr = valid[:8] + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 9, 0, 0, 0)) + valid[33:]
    bad_chunk = valid[:33] + png_chunk(b"IDAT", b"\x78\x9c\xff\xff not zlib") + png_chunk(b"IEND", b"")
    mutated = {
        f"flip{i}": valid[:i] + bytes([valid[i] ^ 0xFF]) + valid[i + 1:] for i in (12, 16, 20, 24, 26, 29, 40)
    }
    return {
        "lab_tiff": lab.getvalue(),
        "bad_ihdr": bad_ihdr,
        "bad_chunk": bad_chunk,
        "bad_ppm": b"P6\n-3 99999999999\n255\n" + b"\x00" * 64,
        "bad_tiff": b"II*\x00\x08\x00\x00\x00\x01\x00\x00\x01\x07\x00\xff\xff\xff\xff\x08\x00\x00\x00",
        "truncated": valid[: len(valid) // 2],
        **mutated,
    }


def test_hostile_images_are_4xx_per_item_on_every_body_kind(backend) -> None:
    good = encode_png(np.random.default_rng(2).integers(0, 255, (32, 32), dtype=np.uint8))
    bad = hostile_images()
    with in_process(backend) as client:
        # one /extract batch: the good image is ok, every bad one rejected by index
        files = [("image", ("good.png", good))] + [("image", (f"{k}.png", v)) for k, v in bad.items()]
        response = client.post("/extract?aligned=true", files=files)
        assert response.status_code == 200, response.text[:500]
        results = response.json()["results"]
        assert results[0]["status"] == "ok"
        assert all(r["status"] == "rejected" for r in results[1:]), results
        encoded = [base64.b64encode(v).decode() for v in bad.values()]
        response = client.post("/extract", json={"images": [encoded[0], *encoded], "aligned": True})
        assert response.status_code == 200 and {r["status"] for r in response.json()["results"]} == {"rejected"}
        for name, data in bad.items():
            raw = client.post("/extract", content=data, headers={"content-type": "image/png"})
            assert raw.status_code == 200 and raw.json()["results"][0]["status"] == "rejected", name
            for response in (
                client.post("/anonymize", files={"image": (f"{name}.png", data)}),
                client.post("/anonymize", content=data, headers={"content-type": "image/tiff"}),
                client.post("/anonymize", json={"image": base64.b64encode(data).decode()}),
            ):
                error = assert_documented_error(response, 422)
                assert error["problems"][0]["field"] in ("image", "body"), (name, error)
    # a request's decoding work is bounded: images past its pixel budget are rejected unread
    with in_process(backend, limits=Limits(max_request_pixels=2 * 32 * 32)) as client:
        files = [("image", (f"{i}.png", good)) for i in range(3)]
        results = client.post("/extract?aligned=true", files=files).json()["results"]
        assert [r["status"] for r in results] == ["ok", "ok", "rejected"]
        assert "pixels" in results[2]["reason"]


# -- 4. numbers, nesting and error sizes ---------------------------------------------------------------------
def test_huge_integers_deep_nesting_and_error_lists_are_bounded_4xx(backend) -> None:
    with in_process(backend) as client:
        for digits in (400, 5000):
            huge = "9" * digits
            for body in (
                f'{{"records": [{json.dumps(RECORD)[:-1]}, "yaw": {huge}}}], "seed": 1}}',
                f'{{"records": [{json.dumps(RECORD)}], "seed": {huge}}}',
                f'{{"images": ["AAAA"], "aligned": {huge}}}',
            ):
                for path in ("/synthesize", "/extract", "/anonymize"):
                    response = client.post(path, content=body, headers={"content-type": "application/json"})
                    assert 400 <= response.status_code < 500, (path, digits, response.text[:300])
            upload = json.dumps([{**RECORD, "id": "a"}])[:-2] + f', "yaw": {huge}}}]'
            for file in (upload.encode(), ("[" * 100_000 + "]" * 100_000).encode()):
                response = client.post("/synthesize", files={"file": ("a.json", file)}, data={"format": "json"})
                assert response.status_code in (200, 422), response.text[:300]
        many = {f"k{i}": 1 for i in range(20_000)}
        response = client.post("/synthesize", json={"records": [RECORD], **many})
        error = assert_documented_error(response, 422)
        assert len(error["problems"]) <= 100 and error["problems_total"] == 20_000
        assert len(response.content) < 50_000


def test_multipart_n_zero_is_422_and_status_csv_neutralises_formulas(backend) -> None:
    names = DEFAULT_SCHEMA.names
    hostile_ids = ["=cmd|' /C calc'!A0", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "plain"]
    lines = ["id," + ",".join(names)] + [f'"{i}",' + ",".join(str(RECORD[n]) for n in names) for i in hostile_ids]
    lines.append('"=bad",' + ",".join("oops" if n == "yaw" else str(RECORD[n]) for n in names))
    files = {"file": ("faces.csv", "\n".join(lines).encode())}
    with in_process(backend) as client:
        zero = client.post("/synthesize", files=files, data={"n": "0", "format": "canonical"})
        assert any(p["field"] == "n" for p in assert_documented_error(zero, 422)["problems"])
        response = client.post("/synthesize", files=files, data={"format": "canonical"})
        assert response.status_code == 200, response.text[:300]
    status = zipfile.ZipFile(io.BytesIO(response.content)).read("status.csv").decode()
    for row in csv.DictReader(io.StringIO(status)):
        for cell in (row["id"], row["reason"]):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert "'=cmd|' /C calc'!A0" in status


def test_internal_errors_are_documented_500s_logged_without_request_bytes(backend, caplog) -> None:
    secret = "PATIENT-Jane-Doe-1985"

    class Broken(LocalEngine):
        async def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
            raise ValueError(f"cannot handle {secret}")

    with caplog.at_level(logging.DEBUG), in_process(backend, Broken(backend)) as client:
        response = client.post("/synthesize", json={"records": [RECORD], "seed": 1}, headers={"x-id": secret})
    error = assert_documented_error(response, 500)
    assert secret not in response.text and "ValueError" in error["message"]
    assert "ValueError" in caplog.text and secret not in caplog.text
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_fuzz_sample_never_answers_5xx(backend) -> None:
    """60 requests of benchmarks/service_fuzz.py's generator in-process (the script sends >= 10,000)."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("service_fuzz", ROOT / "benchmarks" / "service_fuzz.py")
    fuzz = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules.setdefault("service_fuzz", fuzz)  # its dataclass looks its module up there
    spec.loader.exec_module(fuzz)  # type: ignore[union-attr]
    rng = random.Random(23)
    seeds = fuzz.seed_images(rng)
    with in_process(backend) as client:
        for _ in range(60):
            request = fuzz.generate(rng, seeds)
            if request.parts is None:
                response = client.request(request.method, request.path, content=request.body, headers=request.headers)
            else:
                files = [(name, (filename, data)) for name, filename, data in request.parts if filename is not None]
                fields = {name: data.decode("latin-1") for name, filename, data in request.parts if filename is None}
                response = client.request(request.method, request.path, files=files or None, data=fields)
            assert response.status_code < 500, (request.kind, request.path, response.text[:300])


# -- against the real service: metrics, /livez while decoding, slow clients ---------------------------------
HEADER_TIMEOUT_S = 4.0  # long enough for a small /synthesize to be answered among the slow connections


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "OMP_NUM_THREADS": "1",
        "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml")),
        "SURROGATE_MAX_CONCURRENCY": "3",
        "SURROGATE_BODY_TIMEOUT_S": "2",
        "SURROGATE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    }
    with running_service(env, repository, log_path=tmp_path_factory.mktemp("log") / "serve.log") as url:
        yield url


def series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_unknown_paths_are_one_metrics_label_and_never_raw(server) -> None:
    url = server
    assert httpx.get(url + "/warm-up-path").status_code == 404
    before = series(httpx.get(url + "/metrics").text)
    for i in range(10):
        response = httpx.get(f"{url}/PATIENT-Jane-Doe-{1985 + i}")
        assert response.status_code == 404
    assert_documented_error(httpx.post(url + "/PATIENT-Jane-Doe-1985/x"), 404)
    assert httpx.get(url + "/static_content/swagger-ui-bundle.js").status_code == 404
    text = httpx.get(url + "/metrics").text
    assert "PATIENT" not in text and "static_content" not in text and "warm-up" not in text
    assert series(text) == before


def test_livez_answers_while_a_large_upload_is_decoded(server) -> None:
    url = server
    big = io.BytesIO()
    Image.fromarray(np.zeros((4096, 4096), np.uint16)).save(big, format="PNG")
    files = [("image", (f"{i}.png", big.getvalue())) for i in range(3)]
    latencies: list[float] = []
    done = threading.Event()

    def extract() -> httpx.Response:
        try:
            return httpx.post(url + "/extract", files=files, params={"aligned": "true"}, timeout=120)
        finally:
            done.set()

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(extract)
        # Probe from the start, so a fast machine that decodes the upload in under a few tenths of a
        # second still gets probes while it is in flight (a fixed head start once left none).
        while True:
            start = time.perf_counter()
            in_flight = not done.is_set()
            assert httpx.get(url + "/livez", timeout=10).status_code == 200
            latencies.append(time.perf_counter() - start)
            if not in_flight:
                break
            time.sleep(0.02)
        assert pending.result().status_code == 200
    assert len(latencies) >= 2 and max(latencies) < 1.0, latencies


def slow_sender(url: str, path: str = "/synthesize") -> socket.socket:
    """A connection that sends its headers and 1 byte of a 1,000-byte body, then stalls."""
    host, port = re.match(r"http://([^:]+):(\d+)", url).groups()  # type: ignore[union-attr]
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1000\r\n\r\n{{".encode()
    )
    return sock


def test_slow_senders_are_cut_off_and_hold_no_request_slot(server) -> None:
    url = server
    stalled = [slow_sender(url) for _ in range(6)]  # twice SURROGATE_MAX_CONCURRENCY
    try:
        time.sleep(0.3)
        response = httpx.post(url + "/synthesize", json={"records": [RECORD], "seed": 3}, timeout=30)
        assert response.status_code == 200, response.text[:300]
        start = time.perf_counter()
        answer = stalled[0].recv(4096).decode("latin-1")
        assert answer.startswith("HTTP/1.1 408"), answer[:200]
        assert time.perf_counter() - start < 5
    finally:
        for sock in stalled:
            sock.close()


def test_clients_trickling_headers_are_cut_off_and_hold_no_request_slot(server) -> None:
    """Slowloris: connections that never finish their request line and headers are closed within
    SURROGATE_HEADER_TIMEOUT_S (uvicorn alone keeps them open for ever), while a normal request made in
    the middle of them is answered: more of them than SURROGATE_MAX_CONCURRENCY hold no slot."""
    host, port = re.match(r"http://([^:]+):(\d+)", server).groups()  # type: ignore[union-attr]
    head = f"POST /synthesize HTTP/1.1\r\nHost: {host}\r\nX-Padding: ".encode() + b"a" * 400
    stalled = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
    trickling = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
    silent = socket.create_connection((host, int(port)), timeout=10)  # opens, never sends a byte
    opened = time.monotonic()
    for sock in stalled:
        sock.sendall(head[:30])  # part of the request line and headers, then nothing more
    stop = threading.Event()

    def trickle() -> None:  # one byte per connection every 0.25 s, as a slowloris client does
        for at in range(len(head)):
            if stop.wait(0.25):
                return
            for sock in trickling:
                with contextlib.suppress(OSError):  # closed by the server: the point of the test
                    sock.send(head[at : at + 1])

    def closed_after(sock: socket.socket) -> tuple[float, bytes]:
        """Seconds from opening until the server closed ``sock`` (EOF or reset), and what it sent."""
        sock.settimeout(HEADER_TIMEOUT_S + 8)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass  # a byte that arrived after the close makes the kernel answer with a reset
        except TimeoutError:
            return float("inf"), received
        return time.monotonic() - opened, received

    with ThreadPoolExecutor(1) as pool:
        pool.submit(trickle)
        try:
            time.sleep(0.5)
            response = httpx.post(server + "/synthesize", json={"records": [RECORD], "seed": 3}, timeout=30)
            assert response.status_code == 200, response.text[:300]
            assert time.monotonic() - opened < HEADER_TIMEOUT_S  # answered while all 7 were still open
            outcomes = [closed_after(sock) for sock in [*stalled, *trickling, silent]]
        finally:
            stop.set()
            for sock in [*stalled, *trickling, silent]:
                sock.close()
    for seconds, _ in outcomes:
        assert HEADER_TIMEOUT_S - 0.2 <= seconds < HEADER_TIMEOUT_S + 3, outcomes
    for _, received in outcomes[: len(stalled)]:
        status, _, body = received.decode("latin-1").partition("\r\n\r\n")
        assert status.startswith("HTTP/1.1 408") and "connection: close" in status.lower(), received[:300]
        assert json.loads(body)["error"]["status"] == 408
    assert outcomes[-1][1] == b""  # a connection that sent nothing is closed without an answer
