"""The service's Triton path gives the same images as the embedded path (issue 6, items 2-3).

Against the real ``tritonserver`` (session fixture ``triton_served`` in tests/conftest.py: freshly
initialised, really exported Generator/ReconNet, two generator versions, Python-backend variant of the
repository) and real ``bentoml serve`` processes on 127.0.0.1 free ports, started in parallel:

* ``embedded``: onnxruntime in the worker, reading the exported repository;
* ``triton-http`` / ``triton-grpc``: SURROGATE_BACKEND=triton over each transport, same local repository
  for schemas and shapes.

Equality is exact (equal pixels, equal float attributes), not "within a grey level": both paths run
the same model.onnx through onnxruntime on the same float32 inputs row by row.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("bentoml")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("tritonclient.http")

from service.client import HttpClient, TritonGrpcClient, record_seeds  # noqa: E402
from service.testing import EXAMPLE_RECORD, ServiceProcess, running_services  # noqa: E402
from surrogate.imageio import decode_image, encode_png  # noqa: E402
from surrogate.noise import z_batch  # noqa: E402
from surrogate.runtime import OnnxRuntimeBackend, TritonBackend  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402

RECORDS = [
    EXAMPLE_RECORD,
    {"yaw": -25.0, "pitch": 8.0, "roll": -4.0, "AU04": 2.5, "AU05": 0.0, "AU06": 0.0, "AU07": 1.5, "AU12": 0.0,
     "AU23": 4.0, "gender": 0.8},
    {"yaw": 0.0, "pitch": 0.0, "roll": 0.0, "AU04": 0.0, "AU05": 0.0, "AU06": 5.0, "AU07": 0.0, "AU12": 5.0,
     "AU23": 0.0, "gender": 0.5},
]
LATEST_GAN_VERSION = 2  # the conftest fixture exports two generator versions
PROTOCOLS = ("http", "grpc")


def triton_env(server, protocol: str) -> dict[str, str]:
    url = server.http_url if protocol == "http" else server.grpc_url
    return {"SURROGATE_BACKEND": "triton", "SURROGATE_TRITON_URL": url, "SURROGATE_TRITON_PROTOCOL": protocol}


@pytest.fixture(scope="module")
def services(triton_served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URLs of the embedded, triton-http and triton-grpc services (all on the same repository)."""
    server, repository = triton_served
    logs = tmp_path_factory.mktemp("serve-logs")
    kinds = {"embedded": {}, **{f"triton-{p}": triton_env(server, p) for p in PROTOCOLS}}
    processes = [
        ServiceProcess({**env, "OMP_NUM_THREADS": "1", "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml"))},
                       repository=repository.path, log_path=logs / f"{kind}.log")
        for kind, env in kinds.items()
    ]
    with running_services(processes, timeout_s=180) as urls:
        yield dict(zip(kinds, urls, strict=True))


def triton_success_count(server, model: str) -> float:
    """Triton's own count of successful inferences of ``model`` (all versions): proof a call reached it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = rf'^nv_inference_request_success\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$'
    return sum(float(m) for m in re.findall(pattern, text, flags=re.MULTILINE))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_triton_backend_equals_embedded_backend_in_process(triton_served, protocol: str) -> None:
    """The backend layer alone: same (attributes, z) -> same uint8 images; same crops -> same attributes."""
    server, repository = triton_served
    embedded = OnnxRuntimeBackend(repository.path)
    url = server.http_url if protocol == "http" else server.grpc_url
    triton = TritonBackend(url, protocol=protocol, repository=repository.path)
    try:
        assert (triton.gan.name, triton.gan.version) == (embedded.gan.name, embedded.gan.version)
        assert triton.gan.version == LATEST_GAN_VERSION
        values = DEFAULT_SCHEMA.validate_records(RECORDS)
        z = z_batch([11, 12, 13])
        images = triton.generate(values, z)
        assert images.dtype == np.uint8 and images.shape == (3, 1, 16, 16)
        np.testing.assert_array_equal(images, embedded.generate(values, z))
        assert not np.array_equal(images[0], images[2])  # different rows really give different images
        crops = np.random.default_rng(3).integers(0, 256, (4, 1, 16, 16), dtype=np.uint8)
        np.testing.assert_array_equal(triton.reconstruct(crops), embedded.reconstruct(crops))
        # The BentoML worker calls the backend from a thread pool, not the thread that created it
        # (tritonclient's HTTP client is not thread-safe: this once failed with a greenlet error).
        with ThreadPoolExecutor(3) as pool:
            from_threads = list(pool.map(lambda i: triton.generate(values[i:i + 1], z[i:i + 1]), range(3)))
        np.testing.assert_array_equal(np.concatenate(from_threads), images)
    finally:
        triton.close()
        embedded.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_service_on_triton_gives_the_embedded_images(services, triton_served, protocol: str) -> None:
    """/synthesize, /extract and /anonymize through SURROGATE_BACKEND=triton equal the embedded service."""
    server, _ = triton_served
    before = triton_success_count(server, "gan_generator")
    with HttpClient(services["embedded"]) as embedded, HttpClient(services[f"triton-{protocol}"]) as triton:
        assert triton.models()["backend"] == "triton" and embedded.models()["backend"] == "embedded"
        expected = embedded.synthesize(RECORDS, seed=40, n=2)
        got = triton.synthesize(RECORDS, seed=40, n=2)
        assert len(got) == len(expected) == 6
        for a, b in zip(expected, got, strict=True):
            assert (b.seed, b.record, b.model, b.model_version) == (a.seed, a.record, a.model, a.model_version)
            assert b.model_version == LATEST_GAN_VERSION and b.attributes == a.attributes
            assert b.image.shape == (16, 16)
            np.testing.assert_array_equal(b.image, a.image)
        assert not np.array_equal(got[0].image, got[1].image)  # the seed matters
        assert triton_success_count(server, "gan_generator") > before  # the images really came from Triton

        crops = [encode_png(c) for c in np.random.default_rng(5).integers(0, 256, (3, 16, 16), dtype=np.uint8)]
        extracted, expected_attributes = triton.extract(crops), embedded.extract(crops)
        assert [r["status"] for r in extracted] == ["ok"] * 3
        assert [r["attributes"] for r in extracted] == [r["attributes"] for r in expected_attributes]

        surrogate, reference = triton.anonymize(crops[0], seed=9), embedded.anonymize(crops[0], seed=9)
        assert surrogate["attributes"] == reference["attributes"]
        assert surrogate["png_base64"] == reference["png_base64"]


def test_http_synthesize_equals_grpc_through_triton(services, triton_served) -> None:
    """HTTP /synthesize (embedded backend) and service.client.TritonGrpcClient agree pixel for pixel."""
    server, repository = triton_served
    with HttpClient(services["embedded"]) as http_client:
        over_http = http_client.synthesize(RECORDS, seed=123, n=3)
        single = httpx.post(services["embedded"] + "/synthesize", json={"records": [RECORDS[1]], "seeds": [77]},
                            timeout=60)
    grpc_client = TritonGrpcClient(server.grpc_url, repository=Path(repository.path))
    try:
        assert grpc_client.version == LATEST_GAN_VERSION
        over_grpc = grpc_client.synthesize(RECORDS, seed=123, n=3)
        one = grpc_client.generate(DEFAULT_SCHEMA.validate_records([RECORDS[1]]), [77])
        other_seed = grpc_client.synthesize(RECORDS[:1], seed=124, n=1)
    finally:
        grpc_client.close()
    assert [s.seed for s in over_grpc] == [s.seed for s in over_http] == record_seeds(123, len(RECORDS), 3)
    for a, b in zip(over_http, over_grpc, strict=True):
        assert (b.record, b.model, b.model_version) == (a.record, a.model, a.model_version)
        assert b.attributes == a.attributes
        np.testing.assert_array_equal(b.image, a.image)
    # the single-image PNG path and explicit seeds agree too
    assert single.status_code == 200 and single.headers["x-surrogate-model-version"] == str(LATEST_GAN_VERSION)
    np.testing.assert_array_equal(decode_image(single.content, grayscale=True), one[0, 0])
    assert not np.array_equal(other_seed[0].image, over_grpc[0].image)  # a different seed gives another image


# -- the photoreal method: its synthesis network on Triton (entry portrait_synthesis, OpenVINO IR) --------------

photoreal = pytest.mark.skipif(not __import__("surrogate.photoreal").photoreal.photoreal_available(),
                               reason="the portraits extra or its model files are missing")


@pytest.fixture
def portrait_served(triton_served):
    """The server, when the fixture's repository holds the photoreal entry (its venv has openvino)."""
    server, repository = triton_served
    if "portrait_synthesis" not in repository.model_names():
        pytest.skip("the Triton venv has no openvino (re-run scripts/triton_env.sh): portrait_synthesis not served")
    return server


@photoreal
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_triton_portrait_renderer_gives_the_embedded_pixels(portrait_served, protocol: str) -> None:
    """The Python-backend variant runs the exported IR as the embedded backend runs the same graph: equal pixels."""
    from surrogate.photoreal import PHOTOREAL_VERSION, TritonPortraitRenderer
    from surrogate.runtime import BackendError
    from surrogate.synthesis import photoreal_backend

    server = portrait_served
    embedded = photoreal_backend()
    w = embedded.generator.w([3])
    url = server.http_url if protocol == "http" else server.grpc_url
    portraits = TritonPortraitRenderer(url, protocol=protocol).render(w, side=256)
    assert portraits.shape == (1, 256, 256, 3) and portraits.dtype == np.uint8
    np.testing.assert_array_equal(portraits, embedded.generator.render(w, side=256))
    with pytest.raises(BackendError, match=f"v{PHOTOREAL_VERSION + 1}"):  # another graph version: an error
        TritonPortraitRenderer(url, protocol=protocol, version=PHOTOREAL_VERSION + 1).render(w)


@photoreal
def test_service_renders_photoreal_on_triton_and_lists_it(services, portrait_served) -> None:
    """SURROGATE_BACKEND=triton: /synthesize method photoreal renders through Triton with the embedded service's
    pixels, and /models lists the photoreal model with its licence and where it runs."""
    server = portrait_served
    before = triton_success_count(server, "portrait_synthesis")
    with HttpClient(services["embedded"]) as embedded, HttpClient(services["triton-http"]) as triton:
        expected = embedded.synthesize(RECORDS[:1], seed=5, method="photoreal")
        got = triton.synthesize(RECORDS[:1], seed=5, method="photoreal")
        assert len(got) == len(expected) == 1
        for a, b in zip(expected, got, strict=True):
            assert (b.seed, b.model, b.model_version) == (a.seed, a.model, a.model_version)
            assert b.image.shape == (128, 128)  # the photoreal default
            assert np.abs(b.image.astype(int) - a.image).max() <= 1
        assert triton_success_count(server, "portrait_synthesis") > before  # the portraits came from Triton
        for client, backend in ((triton, "triton"), (embedded, "openvino")):
            listed = {m["name"]: m for m in client.models()["models"]}
            assert listed["photoreal"]["backend"] == backend
            assert "non-commercial" in listed["photoreal"]["licence"]
