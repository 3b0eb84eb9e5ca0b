"""Typed Python clients: the HTTP service, and Triton's KServe-v2 gRPC endpoint (BentoML 1.4 has no gRPC).

Both derive the noise from the seed exactly as the service does (``surrogate.runtime``; record r, copy k
uses seed ``seed + r * n + k``), so ``HttpClient.synthesize`` and ``TritonGrpcClient.synthesize`` give
identical images for the same attributes, seed and model version. Neither imports torch or bentoml.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from surrogate.imageio import decode_image
from surrogate.runtime import GAN_MODEL, TritonBackend, generate_images, generator_noise, record_seeds
from surrogate.schema import AttributeSchema

__all__ = ["ClientError", "HttpClient", "Surrogate", "TritonGrpcClient", "record_seeds"]


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

    def extract(self, images: Sequence[bytes], *, aligned: bool = False) -> list[dict[str, Any]]:
        """Attributes of each image's face (``aligned``: the images are already aligned face crops)."""
        files = [("image", (f"{i}.png", data)) for i, data in enumerate(images)]
        response = self._http.post("/extract", files=files, data={"aligned": str(aligned).lower()})
        return self._check(response).json()["results"]

    def anonymize(self, image: bytes, *, seed: int = 0, method: str = "gan", aligned: bool = False) -> dict[str, Any]:
        response = self._http.post(
            "/anonymize", files={"image": ("image.png", image)},
            data={"seed": str(seed), "method": method, "aligned": str(aligned).lower()},
        )
        return self._check(response).json()


def _is_gray(item: Mapping[str, Any]) -> bool:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(item["png_base64"]))) as image:
        return image.mode in ("L", "I;16", "1")


class TritonGrpcClient:
    """The exported generator over Triton's gRPC endpoint, with the service's noise and validation.

    Runs on the runtime's Triton backend, which reads the model's schema and tensors from the local
    model repository (the same files Triton serves); ``schema`` and ``version`` override what it finds.
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        model: str = GAN_MODEL,
        schema: AttributeSchema | None = None,
        repository: str | os.PathLike[str] | None = None,
        version: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.backend = TritonBackend(url, protocol="grpc", timeout_s=timeout_s, repository=repository,
                                     gan_model=model, recon_model=None)
        info = self.backend.gan
        if info is None:  # pragma: no cover - the backend refuses to start without its one model
            raise ClientError(503, f"Triton at {url} does not serve {model!r}")
        self.backend.gan = replace(info, schema=schema or info.schema, version=version or info.version)
        self.model = model
        self.schema = self.backend.gan.schema
        self.version = self.backend.gan.version

    def close(self) -> None:
        self.backend.close()

    def generate(self, values: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """(N, A) natural units + N seeds -> (N, C, H, W) uint8, exactly the generator's output."""
        values = self.schema.validate_array(np.asarray(values, dtype=np.float32), source="attributes")
        return self.backend.generate(values, generator_noise(seeds, self.backend.gan))

    def synthesize(
        self, records: Sequence[Mapping[str, float]], *, seed: int = 0, n: int = 1
    ) -> list[Surrogate]:
        values = self.schema.validate_records(list(records), source="records")
        seeds = record_seeds(seed, len(values), n)
        rows = np.repeat(values, n, axis=0)
        # One call for the whole request, as the service's clients always made it.
        images = generate_images(self.backend, rows, seeds, batch_size=max(1, len(rows)))
        used = self.schema.to_records(rows)
        return [
            Surrogate(image, s, i // n, used[i], self.model, self.version)
            for i, (s, image) in enumerate(zip(seeds, images, strict=True))
        ]
