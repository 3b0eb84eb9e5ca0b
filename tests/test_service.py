"""The BentoML service end to end: a real `bentoml serve` on 127.0.0.1 with tiny demo ONNX models.

The demo models (service.demo_models, built with the onnx helper API because trained models may not
exist yet) have the exported models' exact I/O, so everything but image quality is exercised.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("bentoml")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from service.client import HttpClient, record_seeds  # noqa: E402
from service.demo_models import write_demo_repository  # noqa: E402
from service.testing import EXAMPLE_RECORD, running_service  # noqa: E402
from surrogate.imageio import decode_image, encode_png  # noqa: E402
from surrogate.noise import z_batch  # noqa: E402
from surrogate.runtime import OnnxRuntimeBackend  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402
from surrogate.synthesis_3d import model_version  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECORD = EXAMPLE_RECORD
LIMITS = {
    "SURROGATE_MAX_RECORDS": "20",
    "SURROGATE_MAX_N": "4",
    "SURROGATE_MAX_IMAGES": "40",
    "SURROGATE_MAX_UPLOAD_BYTES": "200000",
    "SURROGATE_MAX_EXTRACT_IMAGES": "4",
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_repository(tmp_path_factory.mktemp("repo") / "model_repository")


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"OMP_NUM_THREADS": "1", "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml")), **LIMITS}
    with running_service(env, repository, log_path=tmp_path_factory.mktemp("log") / "serve.log") as url:
        yield url


def post(url: str, path: str, **kwargs):
    return httpx.post(url + path, timeout=60, **kwargs)


def test_service_imports_no_torch() -> None:
    code = "import sys, service.service, service.client, service.cli; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, BENTOML_DO_NOT_TRACK="true"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_single_record_gives_png_equal_to_the_model(server, repository: Path) -> None:
    url = server
    response = post(url, "/synthesize", json={"records": [RECORD], "seed": 7})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-surrogate-model"] == "gan_generator"
    image = decode_image(response.content, grayscale=True)
    backend = OnnxRuntimeBackend(repository)
    expected = backend.generate(DEFAULT_SCHEMA.validate_records([RECORD]), z_batch([7]))[0, 0]
    assert np.array_equal(image, expected)


def test_same_seed_same_image_whatever_the_batch(server) -> None:
    """Equal pixels (not merely within 1 grey level) alone, in one request, and under adaptive batching."""
    url = server
    records = [dict(RECORD, yaw=float(y)) for y in range(-30, 30, 6)]
    together = HttpClient(url).synthesize(records, seed=100, n=2)
    assert [s.seed for s in together] == record_seeds(100, len(records), 2)

    def alone(i: int) -> np.ndarray:
        body = {"records": [records[i // 2]], "seeds": [together[i].seed]}
        return decode_image(post(url, "/synthesize", json=body).content, grayscale=True)

    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(alone, range(len(together))))
    for surrogate, image in zip(together, concurrent, strict=True):
        assert np.array_equal(surrogate.image, image)
    assert not np.array_equal(together[0].image, together[1].image)  # the seed matters


def test_json_response_carries_model_seed_attributes(server) -> None:
    url = server
    response = post(
        url, "/synthesize", json={"records": [RECORD, dict(RECORD, gender=0.9)], "seed": 3, "n": 2}
    )
    assert response.status_code == 200
    images = response.json()["images"]
    assert [(i["record"], i["index"], i["seed"]) for i in images] == [
        (0, 0, 3),
        (0, 1, 4),
        (1, 0, 5),
        (1, 1, 6),
    ]
    assert images[2]["attributes"]["gender"] == pytest.approx(0.9)
    assert images[0]["model"] == {"name": "gan_generator", "version": 1}
    assert decode_image(base64.b64decode(images[0]["png_base64"])).shape[:2] == (32, 32)
    drawn_3d = post(url, "/synthesize", json={"records": [RECORD], "n": 2, "method": "3d"}).json()["images"]
    assert {(i["method"], i["model"]["name"], i["model"]["version"]) for i in drawn_3d} == {
        ("3d", "face_model_3d_ict", int(model_version()[1]))  # the default face model since ICT v6
    }


@pytest.mark.slow
def test_photoreal_through_the_service_equals_in_process(server) -> None:
    pytest.importorskip("openvino", reason="the portraits extra (openvino) is not installed")
    from surrogate.synthesis import synthesize

    url = server
    body = {"records": [RECORD], "method": "photoreal", "seed": 5, "size": 128, "rgb": True}
    response = httpx.post(url + "/synthesize", json=body, timeout=600)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["x-surrogate-model"] == "photoreal"
    image = decode_image(response.content)
    expected = synthesize("photoreal", DEFAULT_SCHEMA.validate_records([RECORD]), [5], size=128, rgb=True)[0]
    assert image.shape == (128, 128, 3) and np.array_equal(image, expected)


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, None),
        (
            {"content": b'{"records": [{"yaw": NaN}]}', "headers": {"content-type": "application/json"}},
            422,
            "yaw",
        ),
        ({"json": {"records": []}}, 422, "records"),
        ({"json": {"records": [dict(RECORD, yaw="left")]}}, 422, "yaw"),
        ({"json": {"records": [dict(RECORD, AU99=1)]}}, 422, "AU99"),
        (
            {
                "content": json.dumps({"records": [dict(RECORD, pitch=float("inf"))]}).encode(),
                "headers": {"content-type": "application/json"},
            },
            422,
            "pitch",
        ),
        ({"json": {"records": [RECORD], "n": 5}}, 422, "n"),
        ({"json": {"records": [RECORD] * 21}}, 413, "records"),
        ({"json": {"records": [RECORD], "seed": -1}}, 422, "seed"),
        ({"json": {"records": [RECORD], "method": "dream"}}, 422, "method"),
        ({"json": {"records": [RECORD], "size": 128}}, 422, "size"),
        ({"json": {"records": [RECORD], "method": "3d", "rgb": True}}, 422, "rgb"),
        ({"json": {"records": [RECORD], "method": "photoreal", "size": 100}}, 422, "size"),
        ({"json": {"records": [RECORD], "n": 2, "format": "png"}}, 422, "format"),
        ({"json": [1, 2]}, 422, None),
        ({"content": b"x" * 300_000, "headers": {"content-type": "application/json"}}, 413, None),
        ({"content": b"yaw,pitch", "headers": {"content-type": "text/csv"}}, 415, None),
    ],
)
def test_bad_synthesize_requests_are_4xx_naming_the_field(server, kwargs, status, field) -> None:
    url = server
    response = post(url, "/synthesize", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if field:
        assert any(field in p["field"] for p in error["problems"]), error


def test_attribute_file_upload_gives_zip_with_row_status(server) -> None:
    url = server
    names = DEFAULT_SCHEMA.names
    lines = [
        "id,file," + ",".join(names),
        "a,a.png," + ",".join(str(RECORD[n]) for n in names),
        "b,b.png," + ",".join("999" if n == "yaw" else str(RECORD[n]) for n in names),
        "c,c.png," + ",".join(str(RECORD[n]) for n in names),
    ]
    files = {"file": ("faces.csv", "\n".join(lines).encode())}
    response = post(url, "/synthesize", files=files, data={"seed": "5", "n": "2", "format": "canonical"})
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    status = list(csv.DictReader(io.StringIO(archive.read("status.csv").decode())))
    assert [(r["id"], r["status"]) for r in status] == [("a", "ok"), ("b", "rejected"), ("c", "ok")]
    assert "yaw" in status[1]["reason"]
    version = response.headers["X-Surrogate-Model-Version"]
    assert {(r["model"], r["model_version"]) for r in status} == {("gan_generator", version)}
    drawn_3d = post(url, "/synthesize", files=files, data={"n": "1", "format": "canonical", "method": "3d"})
    assert drawn_3d.status_code == 200, drawn_3d.text
    status_3d = zipfile.ZipFile(io.BytesIO(drawn_3d.content)).read("status.csv").decode()
    rows_3d = list(csv.DictReader(io.StringIO(status_3d)))
    assert {(r["method"], r["model"], r["model_version"]) for r in rows_3d} == {
        ("3d", *model_version())
    }
    assert drawn_3d.headers["X-Surrogate-Model"] == "face_model_3d_ict"
    assert sorted(n for n in archive.namelist() if n.endswith(".png")) == [
        "images/a_0.png",
        "images/a_1.png",
        "images/c_0.png",
        "images/c_1.png",
    ]
    garbage = post(
        url,
        "/synthesize",
        files={"file": ("x.csv", b"\x00\x01\x02 not,a\ncsv")},
        data={"format": "canonical"},
    )
    assert garbage.status_code == 422
    assert "tmp" not in garbage.text and "surrogate-upload" not in garbage.text


def test_extract_and_anonymize(server) -> None:
    url = server
    face = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(pytest.importorskip("skimage.data").astronaut()).resize((200, 200)))
    tight = np.asarray(Image.fromarray(photo[27:74, 62:110]).resize((64, 64)))  # brow to chin, 64 px
    results = HttpClient(url).extract([encode_png(photo), encode_png(tight), encode_png(face), b"not an image"])
    assert [r["status"] for r in results] == ["ok", "ok", "rejected", "rejected"]
    assert set(results[0]["attributes"]) == set(DEFAULT_SCHEMA.names)
    assert "no face found" in results[2]["reason"] and "not a readable image" in results[3]["reason"]
    # callers that send aligned crops skip detection
    assert HttpClient(url).extract([encode_png(face)], aligned=True)[0]["status"] == "ok"
    no_face = post(url, "/anonymize", files={"image": ("f.png", encode_png(face))}, data={"seed": "9"})
    assert no_face.status_code == 422 and "no face found" in no_face.text
    body = post(url, "/anonymize", files={"image": ("f.png", encode_png(photo))}, data={"seed": "9"})
    assert body.status_code == 200
    data = body.json()
    assert set(data) == {"seed", "method", "model", "attributes", "png_base64"}
    # the surrogate is the generator's image for the extracted attributes and the seed
    again = post(url, "/synthesize", json={"records": [data["attributes"]], "seeds": [9]})
    assert np.array_equal(
        decode_image(again.content, grayscale=True),
        decode_image(base64.b64decode(data["png_base64"]), grayscale=True),
    )
    assert (
        post(url, "/anonymize", content=b"\x89PNG broken", headers={"content-type": "image/png"}).status_code
        == 422
    )
    too_many = [("image", (f"{i}.png", encode_png(face))) for i in range(5)]
    assert post(url, "/extract", files=too_many).status_code == 413


def test_models_health_metrics_and_no_third_party_scripts(server) -> None:
    url = server
    models = httpx.get(url + "/models").json()
    from surrogate.photoreal import photoreal_available

    photoreal = {"photoreal"} if photoreal_available() else set()
    assert {m["name"] for m in models["models"]} == {"gan_generator", "recon"} | photoreal
    assert set(models["methods"]) == {"gan", "3d"} | photoreal
    for model in models["models"]:
        if model["name"] == "photoreal":
            assert "non-commercial" in model["licence"] and model["noise"] == "portrait"
    assert [a["name"] for a in models["models"][0]["attributes"]] == list(DEFAULT_SCHEMA.names)
    for probe in ("/readyz", "/livez", "/healthz"):
        assert httpx.get(url + probe).status_code == 200
    text = httpx.get(url + "/metrics").text
    for name in (
        "surrogate_images_total",
        "surrogate_backend_latency_seconds",
        "surrogate_backend_batch_rows",
        "surrogate_rejected_inputs_total",
        "bentoml_service_request_total",
    ):
        assert name in text
    for page in ("/", "/docs.json"):
        body = httpx.get(url + page).text.lower()
        assert "googletagmanager" not in body and '<script src="http' not in body and "gtm.js" not in body
    assert httpx.get(url + "/").headers["content-security-policy"].startswith("default-src 'none'")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
NEAR_VALID = st.fixed_dictionaries(
    {
        "records": st.lists(
            st.dictionaries(
                st.sampled_from([*DEFAULT_SCHEMA.names, "x"]),
                st.floats() | st.integers() | st.text(max_size=3),
                max_size=11,
            ),
            max_size=3,
        )
    },
    optional={
        "seed": st.integers(-5, 2**64),
        "n": st.integers(-1, 6),
        "method": st.sampled_from(["gan", "3d", ""]),
        "format": st.sampled_from(["auto", "png", "json", "gif"]),
        "seeds": st.lists(st.integers(-1, 2**64)),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/synthesize", "/extract", "/anonymize"]), body=JSON_VALUES | NEAR_VALID)
def test_fuzz_the_openapi_endpoints_never_5xx(server, path: str, body) -> None:
    url = server
    response = post(
        url,
        path,
        content=json.dumps(body, allow_nan=True).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, (path, body, response.text[:300])
    if response.status_code >= 400:
        assert "error" in response.json()


def test_openapi_document_lists_every_endpoint(server) -> None:
    url = server
    spec = httpx.get(url + "/docs.json").json()
    assert {"/synthesize", "/extract", "/anonymize", "/models"} <= set(spec["paths"])
    assert "SynthesizeRequest" in spec["components"]["schemas"]
