"""Typed Python clients: the HTTP service, and Triton's KServe-v2 gRPC endpoint (BentoML 1.4 has no gRPC).

Both derive the noise from the seed exactly as the service does (``surrogate.noise``; record r, copy k
uses seed ``seed + r * n + k``), so ``HttpClient.synthesize`` and ``TritonGrpcClient.synthesize`` give
identical images for the same attributes, seed and model version. Neither imports torch or bentoml.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from surrogate.imageio import decode_image
from surrogate.noise import image_seeds, z_batch
from surrogate.schema import AttributeSchema


class ClientError(RuntimeError):
    """The server refused the request; ``status`` and ``problems`` (row/field/reason) say why."""

    def __init__(self, status: int, message: str, problems: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.problems = list(problems)


@dataclass(frozen=True)
class Surrogate:
    """One surrogate image with what produced it."""

    image: np.ndarray  # uint8 (H, W) or (H, W, 3)
    seed: int
    record: int
    attributes: dict[str, float]
    model: str | None = None
    model_version: int | None = None


def record_seeds(seed: int, records: int, n: int) -> list[int]:
    """Seeds of every image, record-major: the service's rule for a request without ``seeds``."""
    return [s for r in range(records) for s in image_seeds(seed + r * n, n)]


class HttpClient:
    """The HTTP API of ``surrogate serve`` (httpx, connection pooling)."""

    def __init__(self, url: str = "http://127.0.0.1:3000", timeout_s: float = 60.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: Any) -> Any:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise ClientError(response.status_code, error["message"], error.get("problems", []))
            except (ValueError, KeyError, TypeError):
                raise ClientError(response.status_code, response.text[:500]) from None
        return response

    def models(self) -> dict[str, Any]:
        return self._check(self._http.get("/models")).json()

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except Exception:  # noqa: BLE001 - connection refused etc.
            return False

    def synthesize(
        self, records: Sequence[Mapping[str, float]], *, seed: int = 0, n: int = 1, method: str = "gan"
    ) -> list[Surrogate]:
        body = {
            "records": [dict(r) for r in records],
            "seed": seed,
            "n": n,
            "method": method,
            "format": "json",
        }
        data = self._check(self._http.post("/synthesize", json=body)).json()
        return [
            Surrogate(
                decode_image(base64.b64decode(item["png_base64"]), grayscale=True)
                if _is_gray(item)
                else decode_image(base64.b64decode(item["png_base64"])),
                item["seed"],
                item["record"],
                item["attributes"],
                (item.get("model") or {}).get("name"),
                (item.get("model") or {}).get("version"),
            )
            for item in data["images"]
        ]

    def synthesize_file(
        self,
        path: str | os.PathLike[str],
        *,
        seed: int = 0,
        n: int = 1,
        method: str = "gan",
        file_format: str = "auto",
    ) -> bytes:
        """Upload an attribute file; returns the zip (PNGs + status.csv)."""
        with open(path, "rb") as handle:
            response = self._http.post(
                "/synthesize",
                files={"file": (os.path.basename(path), handle)},
                data={"seed": str(seed), "n": str(n), "method": method, "format": file_format},
            )
        return self._check(response).content

    def extract(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        files = [("image", (f"{i}.png", data)) for i, data in enumerate(images)]
        return self._check(self._http.post("/extract", files=files)).json()["results"]

    def anonymize(self, image: bytes, *, seed: int = 0, method: str = "gan") -> dict[str, Any]:
        response = self._http.post(
            "/anonymize", files={"image": ("image.png", image)}, data={"seed": str(seed), "method": method}
        )
        return self._check(response).json()


def _is_gray(item: Mapping[str, Any]) -> bool:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(item["png_base64"]))) as image:
        return image.mode in ("L", "I;16", "1")


class TritonGrpcClient:
    """The exported generator over Triton's gRPC endpoint, with the service's noise and validation.

    The schema comes from the local model repository (the same files Triton serves) unless given.
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        model: str = "gan_generator",
        schema: AttributeSchema | None = None,
        repository: str | os.PathLike[str] | None = None,
        version: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self.model = model
        self.timeout_s = timeout_s
        if schema is None:
            from surrogate.model_repo import ModelRepository
            from surrogate.synthesis import default_repository

            schema = ModelRepository(repository or default_repository()).schema(model)
        self.schema = schema
        if version is None:
            versions = self.client.get_model_metadata(model).versions
            version = max(int(v) for v in versions)
        self.version = version

    def close(self) -> None:
        self.client.close()

    def generate(self, values: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """(N, A) natural units + N seeds -> (N, C, H, W) uint8, exactly the generator's output."""
        values = self.schema.validate_array(np.asarray(values, dtype=np.float32), source="attributes")
        z = z_batch(list(seeds))
        inputs = []
        for name, array in (("attributes", values), ("z", z)):
            tensor = self._grpc.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        result = self.client.infer(
            self.model,
            inputs,
            model_version=str(self.version),
            outputs=[self._grpc.InferRequestedOutput("image")],
            client_timeout=self.timeout_s,
        )
        return result.as_numpy("image")

    def synthesize(
        self, records: Sequence[Mapping[str, float]], *, seed: int = 0, n: int = 1
    ) -> list[Surrogate]:
        values = self.schema.validate_records(list(records), source="records")
        seeds = record_seeds(seed, len(values), n)
        rows = np.repeat(values, n, axis=0)
        images = self.generate(rows, seeds)
        used = self.schema.to_records(rows)
        return [
            Surrogate(
                image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0)),
                s,
                i // n,
                used[i],
                self.model,
                self.version,
            )
            for i, (s, image) in enumerate(zip(seeds, images, strict=True))
        ]
