"""The BentoML services: a public front end and an adaptive-batching model worker.

``SurrogateService`` (the one to serve: ``bentoml serve service.service:SurrogateService``) mounts the
Starlette API of ``service.http_app`` at ``/`` (which also replaces BentoML's Swagger page, whose
Google Tag Manager script would leak every visit to a third party) and forwards every model call to
``ModelWorker``. The worker's APIs are *batchable*: BentoML merges the rows of concurrent requests into
one backend call of up to ``SURROGATE_MAX_BATCH_SIZE`` rows. A batchable BentoML API takes exactly
one argument, so a generator row travels as [attributes | z] (``pack_rows`` / ``unpack_rows``); each
row's image depends only on that row. The z itself comes from the runtime's seed rule, drawn by the
front end (``service.http_app``).

Configuration: environment variables only (``service.config``). Nothing here imports torch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import bentoml  # noqa: E402 - tracking must be off before bentoml is imported
import numpy as np  # noqa: E402

from service.backends import BackendError, ModelInfo, create_backend  # noqa: E402
from service.config import ServiceConfig  # noqa: E402
from service.connections import install as install_connection_limits  # noqa: E402
from service.http_app import API_PATHS, UNKNOWN_PATH, SurrogateAPI, timed_call  # noqa: E402

logger = logging.getLogger(__name__)
CONFIG = ServiceConfig.from_env()
# Both services' uvicorn servers (front end and worker) get the header deadline and keep-alive timeout;
# BentoML creates them after importing this module.
install_connection_limits(CONFIG.header_timeout_s, CONFIG.keep_alive_s)
TRITON_WAIT_S = 60.0
WORKER_RETRIES = 2


# BentoML's proxy to a service (proxy2.SessionManager, 1.4.31+) replaces its aiohttp session every
# runner_connection.max_requests requests (100) or max_age seconds (300) and closes the old one with every
# connection still carrying a request: those calls fail with "Server disconnected" / "Can not write
# request body", possibly after the worker answered them (benchmarks/worker_session_refresh.py, 6 callers
# for 60 s: 310 of 11,751 calls; 0 of 12,954 with this setting; BentoML issue #5540 reports the "Session
# is closed" variant), and concurrent refreshes leak sessions. The
# worker's address is fixed for the life of the front end, so one session is enough.
ONE_SESSION = {"max_requests": 2**62, "max_age": 1e12}


@bentoml.service(
    name="surrogate_models",
    workers=1,
    traffic={"timeout": CONFIG.request_timeout_s},
    runner_connection=ONE_SESSION,
)
class ModelWorker:
    """Runs the generator and the reconstruction network on merged batches."""

    def __init__(self) -> None:
        self.backend = create_backend(
            CONFIG, **({"wait_s": TRITON_WAIT_S} if CONFIG.backend == "triton" else {})
        )

    @bentoml.api(batchable=True, max_batch_size=CONFIG.max_batch_size, max_latency_ms=CONFIG.max_latency_ms)
    def generate(self, rows: np.ndarray) -> np.ndarray:
        """(N, A + Z) float32 [attributes in natural units | noise] -> (N, C, H, W) uint8."""
        if self.backend.gan is None:
            raise bentoml.exceptions.ServiceUnavailable("no generator model is loaded")
        attributes, z = unpack_rows(rows, len(self.backend.gan.schema))
        return _unavailable_on_backend_error(
            timed_call, self.backend.generate, "gan", self.backend.kind, attributes, z
        )

    @bentoml.api(batchable=True, max_batch_size=CONFIG.max_batch_size, max_latency_ms=CONFIG.max_latency_ms)
    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """(N, C, S, S) uint8 aligned crops -> (N, A) float32 attributes in natural units."""
        return _unavailable_on_backend_error(
            timed_call, self.backend.reconstruct, "recon", self.backend.kind, np.asarray(images, dtype=np.uint8)
        )

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        """Backend kind and the served models' facts (the front end caches them)."""
        return {
            "backend": self.backend.kind,
            "gan": self.backend.gan.to_dict() if self.backend.gan else None,
            "recon": self.backend.recon.to_dict() if self.backend.recon else None,
        }


def pack_rows(attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(N, A) attributes + (N, Z) noise -> (N, A + Z) float32: one array, as a batchable API needs."""
    return np.concatenate([attributes, z], axis=1).astype(np.float32)


def unpack_rows(rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``pack_rows`` for a generator whose attribute schema has ``width`` columns."""
    rows = np.asarray(rows, dtype=np.float32)
    return rows[:, :width], rows[:, width:]


def _unavailable_on_backend_error(call: Any, *args: Any) -> Any:
    """A backend failure (Triton down, model missing) is a 503 for the caller, not an internal error."""
    try:
        return call(*args)
    except BackendError as exc:
        raise bentoml.exceptions.ServiceUnavailable(str(exc)) from None


class WorkerEngine:
    """The front end's Engine: model calls go to the worker (and so through adaptive batching)."""

    def __init__(self, worker: Any, max_batch_rows: int) -> None:
        self.worker = worker
        self.max_batch_rows = max_batch_rows
        self.backend_kind = CONFIG.backend
        self._models: tuple[ModelInfo | None, ModelInfo | None] | None = None

    async def models(self) -> tuple[ModelInfo | None, ModelInfo | None]:
        if self._models is None:
            facts = await self.worker.to_async.describe()
            self.backend_kind = facts["backend"]
            self._models = tuple(
                ModelInfo.from_dict(facts[k]) if facts[k] else None  # type: ignore[assignment]
                for k in ("gan", "recon")
            )
        return self._models  # type: ignore[return-value]

    async def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        return await self._call("generate", rows=pack_rows(attributes, z))

    async def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return await self._call("reconstruct", images=images)

    async def _call(self, name: str, **arrays: np.ndarray) -> np.ndarray:
        """Call a worker API; retry a dropped connection (the calls are pure, so retrying is safe).

        With ``ONE_SESSION`` and the keep-alive timeout of ``service.connections`` no connection to the
        worker should drop; the retry stays for a worker that restarts.
        """
        import aiohttp

        for attempt in range(WORKER_RETRIES + 1):
            try:
                return await getattr(self.worker.to_async, name)(**arrays)
            except aiohttp.ClientConnectionError as exc:
                logger.warning("the model worker dropped the connection (%s), attempt %d", type(exc).__name__,
                               attempt + 1)
                if attempt == WORKER_RETRIES:
                    raise BackendError(f"the model worker dropped the connection: {exc}") from None
        raise AssertionError("unreachable")


def _engine() -> WorkerEngine:
    return bentoml.get_current_service().engine


API = SurrogateAPI(_engine, CONFIG)


# BentoML's own limits answer in their own format (429 {"error": "Too many requests"}, 504), and its
# concurrency limit counts requests whose body is still arriving, so slow senders could take every slot.
# The API's admission control (service.http_app.Admission) replaces it; BentoML's timeout stays only as a
# backstop behind the API's own body and request deadlines.
BACKSTOP_TIMEOUT_S = CONFIG.request_timeout_s + CONFIG.body_timeout_s + 15


def _label_unknown_paths() -> None:
    """Make BentoML's HTTP metrics (and everything after them: access log, routing) see any path outside
    the route table as ``UNKNOWN_PATH``, so /metrics holds one series per route, never a raw path (one
    could be /PATIENT-Jane-Doe-1985), and BentoML's Swagger bundle under /static_content is not served.

    BentoML 1.4 builds its metrics middleware, the outermost of the app, from this module attribute each
    time it builds an app; tests/test_service_hardening.py checks that the patch still takes effect.
    """
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "bounded_paths", False):
        return
    known = frozenset(
        {*API_PATHS, UNKNOWN_PATH, "/livez", "/healthz", "/readyz", "/metrics"}
        | {api.route for api in ModelWorker.apis.values()}
    )

    class BoundedPathMetrics(base):  # type: ignore[misc, valid-type]
        bounded_paths = True

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket") and scope.get("path") not in known:
                scope = {**scope, "path": UNKNOWN_PATH, "raw_path": UNKNOWN_PATH.encode()}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedPathMetrics


_label_unknown_paths()


@bentoml.service(name="surrogate_faces", traffic={"timeout": BACKSTOP_TIMEOUT_S})
@bentoml.asgi_app(API.app(), path="/")
class SurrogateService:
    """Public API: /synthesize, /extract, /anonymize, /models (+ BentoML's /readyz, /livez, /metrics)."""

    worker = bentoml.depends(ModelWorker)

    def __init__(self) -> None:
        self.engine = WorkerEngine(self.worker, CONFIG.max_batch_size)

    async def __is_ready__(self) -> bool:
        """Ready only once the worker has loaded its models and answered."""
        try:
            gan, recon = await self.engine.models()
        except Exception:  # noqa: BLE001 - any failure means not ready yet
            return False
        return gan is not None or recon is not None
