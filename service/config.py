"""Service configuration from environment variables (the only way to configure a container).

Every knob has a safe default for a laptop on 127.0.0.1; ``docs/service.md`` lists them. Values are
read once per process (``ServiceConfig.from_env``) and invalid values fail at start-up with a message
naming the variable, not at the first request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surrogate.runtime import BACKENDS as RUNTIME_BACKENDS

# Every backend the runtime knows (a backend registered there becomes a valid SURROGATE_BACKEND).
BACKENDS = tuple(RUNTIME_BACKENDS)
TRITON_PROTOCOLS = ("http", "grpc")
DEVICES = ("cpu", "cuda")

ENV_PREFIX = "SURROGATE_"


class ConfigError(ValueError):
    """An environment variable holds an invalid value."""


def _default_repository() -> str:
    return str(Path(__file__).resolve().parent.parent / "model_repository")


@dataclass(frozen=True)
class Limits:
    """Per-request limits: they keep one request from monopolising the service (4xx when exceeded)."""

    max_records: int = 256  # attribute records in one JSON request or one uploaded file
    max_n: int = 16  # surrogates per record
    max_images: int = 1024  # records x n in one request
    max_upload_bytes: int = 8 * 1024 * 1024
    max_image_side: int = 4096  # uploaded images for /extract and /anonymize
    max_extract_images: int = 64  # images in one /extract request
    max_request_pixels: int = 2**28  # decoded pixels of one request's images (16 x 4096 x 4096)


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service reads from the environment."""

    backend: str = "embedded"
    model_repository: str = field(default_factory=_default_repository)
    device: str = "cpu"
    triton_url: str = "127.0.0.1:8000"
    triton_protocol: str = "http"
    triton_timeout_s: float = 30.0
    # Adaptive batching of the generator/recon worker. max_latency_ms is a hard queue deadline in
    # BentoML (requests waiting longer get 503), so it is sized well above the latency of a full batch.
    max_batch_size: int = 128
    max_latency_ms: int = 5000
    # Admission control (service.http_app): requests being worked on at once per front-end process,
    # and images queued for the model worker; beyond either the answer is an immediate 503 with
    # Retry-After, so the worker's queue stays shorter than its max_latency_ms deadline.
    max_concurrency: int = 64
    max_queued_images: int = 512
    request_timeout_s: int = 60
    # A request body must have arrived within this time (slow senders get 408, not a worker slot).
    body_timeout_s: float = 20.0
    # A request's line and headers must have arrived within this time of the connection opening (or of
    # the request's first byte on a kept-alive connection), else 408 and close (service.connections).
    header_timeout_s: float = 10.0
    # Idle time before the server closes a kept-alive connection. Longer than the idle timeout of common
    # client pools and proxies (aiohttp 15 s, which BentoML's own front-end-to-worker pool uses; httpx 5 s;
    # nginx's upstream keep-alive and AWS load balancers 60 s), so that the client closes first: a server
    # closing first races with a client reusing the connection (a dropped request). Idle connections
    # hold no request slot, and a half-sent request is bounded by header_timeout_s.
    keep_alive_s: float = 75.0
    gan_model: str = "gan_generator"
    recon_model: str = "recon"
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceConfig:
        env = os.environ if environ is None else environ
        defaults = cls()

        def text(name: str, default: str, choices: tuple[str, ...] = ()) -> str:
            value = env.get(ENV_PREFIX + name, default).strip()
            if choices and value not in choices:
                raise ConfigError(f"{ENV_PREFIX}{name}={value!r}: expected one of {', '.join(choices)}")
            return value

        def number(name: str, default: float, kind: type = int, minimum: float = 1) -> Any:
            raw = env.get(ENV_PREFIX + name)
            if raw is None or raw.strip() == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{name}={raw!r}: expected a {kind.__name__}") from None
            if value < minimum:
                raise ConfigError(f"{ENV_PREFIX}{name}={raw!r}: must be >= {minimum}")
            return value

        lim = defaults.limits
        limits = Limits(
            max_records=number("MAX_RECORDS", lim.max_records),
            max_n=number("MAX_N", lim.max_n),
            max_images=number("MAX_IMAGES", lim.max_images),
            max_upload_bytes=number("MAX_UPLOAD_BYTES", lim.max_upload_bytes),
            max_image_side=number("MAX_IMAGE_SIDE", lim.max_image_side),
            max_extract_images=number("MAX_EXTRACT_IMAGES", lim.max_extract_images),
            max_request_pixels=number("MAX_REQUEST_PIXELS", lim.max_request_pixels),
        )
        return cls(
            backend=text("BACKEND", defaults.backend, BACKENDS),
            model_repository=text("MODEL_REPOSITORY", defaults.model_repository),
            device=text("DEVICE", defaults.device, DEVICES),
            triton_url=text("TRITON_URL", defaults.triton_url),
            triton_protocol=text("TRITON_PROTOCOL", defaults.triton_protocol, TRITON_PROTOCOLS),
            triton_timeout_s=number("TRITON_TIMEOUT_S", defaults.triton_timeout_s, float, 0.1),
            max_batch_size=number("MAX_BATCH_SIZE", defaults.max_batch_size),
            max_latency_ms=number("MAX_LATENCY_MS", defaults.max_latency_ms),
            max_concurrency=number("MAX_CONCURRENCY", defaults.max_concurrency),
            max_queued_images=number("MAX_QUEUED_IMAGES", defaults.max_queued_images),
            request_timeout_s=number("REQUEST_TIMEOUT_S", defaults.request_timeout_s),
            body_timeout_s=number("BODY_TIMEOUT_S", defaults.body_timeout_s, float, 0.1),
            header_timeout_s=number("HEADER_TIMEOUT_S", defaults.header_timeout_s, float, 0.1),
            keep_alive_s=number("KEEP_ALIVE_S", defaults.keep_alive_s, float, 0.1),
            gan_model=text("GAN_MODEL", defaults.gan_model),
            recon_model=text("RECON_MODEL", defaults.recon_model),
            limits=limits,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ENVIRONMENT_VARIABLES: dict[str, str] = {
    "SURROGATE_BACKEND": "embedded (onnxruntime in-process, default) or triton",
    "SURROGATE_MODEL_REPOSITORY": "model repository for the embedded backend (default: ./model_repository)",
    "SURROGATE_DEVICE": "cpu (default) or cuda (embedded backend; needs onnxruntime-gpu)",
    "SURROGATE_TRITON_URL": "host:port of Triton (HTTP 8000 or gRPC 8001; default 127.0.0.1:8000)",
    "SURROGATE_TRITON_PROTOCOL": "http (default) or grpc",
    "SURROGATE_TRITON_TIMEOUT_S": "timeout of one Triton call (default 30)",
    "SURROGATE_MAX_BATCH_SIZE": "largest adaptive batch of generator/recon rows (default 128)",
    "SURROGATE_MAX_LATENCY_MS": "adaptive batching queue deadline; older requests get 503 (default 5000)",
    "SURROGATE_MAX_CONCURRENCY": "requests worked on at once before 503 + Retry-After (default 64)",
    "SURROGATE_MAX_QUEUED_IMAGES": "images queued for the model worker before 503 + Retry-After (default 512)",
    "SURROGATE_REQUEST_TIMEOUT_S": "time to answer a request once its body arrived, else 503 (default 60)",
    "SURROGATE_BODY_TIMEOUT_S": "time for a request body to arrive, else 408 (default 20)",
    "SURROGATE_HEADER_TIMEOUT_S": "time for a request's line and headers to arrive, else 408 and close (default 10)",
    "SURROGATE_KEEP_ALIVE_S": "idle time before the server closes a kept-alive connection (default 75)",
    "SURROGATE_GAN_MODEL / SURROGATE_RECON_MODEL": "model names in the repository",
    "SURROGATE_MAX_RECORDS": "records per request or uploaded file (default 256)",
    "SURROGATE_MAX_N": "surrogates per record (default 16)",
    "SURROGATE_MAX_IMAGES": "records x n per request (default 1024)",
    "SURROGATE_MAX_UPLOAD_BYTES": "largest request body / uploaded file (default 8 MiB)",
    "SURROGATE_MAX_IMAGE_SIDE": "largest side of an uploaded image (default 4096)",
    "SURROGATE_MAX_EXTRACT_IMAGES": "images per /extract request (default 64)",
    "SURROGATE_MAX_REQUEST_PIXELS": "decoded pixels of one request's images; the rest are 413 per item (2**28)",
    "BENTOML_DO_NOT_TRACK": "always true: `surrogate serve` sets it; set it yourself for `bentoml serve`",
}
