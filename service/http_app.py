"""The public HTTP API's handlers as a Starlette app, independent of how the models are run.

BentoML mounts this app (``service.service``) and hands it an ``Engine`` that forwards model calls to
its adaptive-batching worker; tests can hand it a ``LocalEngine`` instead. Request parsing lives in
``service.request_parsing`` (every mistake a 4xx JSON error naming the field or row), the answers'
packaging (model headers, the ZIP) in ``service.packaging``; model trouble is a 503. The seed of
every image and its z come from the runtime's rule (``surrogate.runtime``).

Privacy rules kept here: uploaded images and attribute files are parsed in memory, no request
content is logged or put in metrics, and /anonymize answers with the surrogate and the attributes only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import anyio
import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.config import ServiceConfig
from service.packaging import build_zip, model_headers, producing_model
from service.request_parsing import (
    Part,
    RequestError,
    decode_base64,
    error_response,
    form_choice,
    form_int,
    media_type,
    overloaded_response,
    parse_json,
    parse_multipart,
    problems_from_attributes,
    read_attribute_upload,
    read_body,
    validate_model,
)
from service.schemas import AnonymizeRequest, ImageRequest, SynthesizeRequest, openapi_document
from surrogate.imageio import ImageDecodeError, decode_image, encode_png
from surrogate.noise import check_seed, expand_seeds, image_seeds
from surrogate.runtime import Backend, BackendError, ModelInfo, generator_noise, record_seeds, require, to_hwc
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema, AttributeValidationError
from surrogate.synthesis import METHODS, reorder

_T = TypeVar("_T")
logger = logging.getLogger(__name__)
# Every route of the API (GET and POST); service.service labels any other path as UNKNOWN_PATH.
API_PATHS = ("/", "/docs.json", "/models", "/synthesize", "/extract", "/anonymize")
UNKNOWN_PATH = "/unknown-path"
CPU_THREADS = 2  # decoding, alignment and packaging threads at once (the event loop keeps answering)


class Engine(Protocol):
    """Runs the models for the HTTP layer (a BentoML worker proxy, or a backend in this process)."""

    backend_kind: str
    max_batch_rows: int

    async def models(self) -> tuple[ModelInfo | None, ModelInfo | None]:
        """(generator, reconstruction) facts; None for a model that is not served."""

    async def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray: ...

    async def reconstruct(self, images: np.ndarray) -> np.ndarray: ...


class LocalEngine:
    """An Engine over a backend in this process (tests, the benchmark's baseline, single-process use)."""

    def __init__(self, backend: Backend, max_batch_rows: int = 128) -> None:
        self.backend = backend
        self.backend_kind = backend.kind
        self.max_batch_rows = max_batch_rows

    async def models(self) -> tuple[ModelInfo | None, ModelInfo | None]:
        return self.backend.gan, self.backend.recon

    async def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        return await anyio.to_thread.run_sync(
            timed_call, self.backend.generate, "gan", self.backend_kind, attributes, z
        )

    async def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return await anyio.to_thread.run_sync(
            timed_call, self.backend.reconstruct, "recon", self.backend_kind, images
        )


def timed_call(
    function: Callable[..., np.ndarray], model: str, backend: str, *arrays: np.ndarray
) -> np.ndarray:
    """Run one backend call and record its latency and batch size (the worker uses this too)."""
    start = time.perf_counter()
    result = function(*arrays)
    metrics.BACKEND_LATENCY.labels(model=model, backend=backend).observe(time.perf_counter() - start)
    metrics.BATCH_ROWS.labels(model=model).observe(len(arrays[0]))
    return result


# -- the application ---------------------------------------------------------------------------------
INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>surrogate-faces</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>body{font-family:sans-serif;max-width:52em;margin:2em auto}code{background:#eee}</style></head>
<body><h1>surrogate-faces service</h1>
<p>Attribute-conditioned surrogate faces. This page loads no script; the OpenAPI document is at
<a href="docs.json">/docs.json</a>.</p>
<ul>
<li><code>POST /synthesize</code> attribute records (JSON) or an attribute file
(multipart <code>file</code>)</li>
<li><code>POST /extract</code> face crops -&gt; attributes</li>
<li><code>POST /anonymize</code> one face crop -&gt; one surrogate (the image is never kept)</li>
<li><code>GET /models</code>, <code>/readyz</code>, <code>/livez</code>, <code>/metrics</code></li>
</ul>
<pre>curl -s -X POST http://127.0.0.1:3000/synthesize -H 'content-type: application/json' \\
  -d '{"records": [{"yaw": 10, "pitch": 0, "roll": 0, "AU04": 0, "AU05": 0, "AU06": 2, "AU07": 0,
       "AU12": 3, "AU23": 0, "gender": 0.3}], "seed": 7}' -o surrogate.png</pre>
</body></html>
"""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SurrogateAPI:
    """The request handlers; ``app()`` builds the Starlette app."""

    def __init__(self, engine_factory: Callable[[], Engine], config: ServiceConfig) -> None:
        self._engine_factory = engine_factory
        self.config = config
        self.limits = config.limits
        self.admission = Admission(
            config.max_concurrency, config.max_queued_images, target_s=config.max_latency_ms / 2000
        )
        self._cpu: tuple[Any, anyio.CapacityLimiter] | None = None

    @property
    def engine(self) -> Engine:
        return self._engine_factory()

    def app(self) -> Starlette:
        routes = [
            Route("/", self.index, methods=["GET"]),
            Route("/docs.json", self.openapi, methods=["GET"]),
            Route("/models", self.wrap("models", self.models, work=False), methods=["GET"]),
            Route("/synthesize", self.wrap("synthesize", self.synthesize), methods=["POST"]),
            Route("/extract", self.wrap("extract", self.extract), methods=["POST"]),
            Route("/anonymize", self.wrap("anonymize", self.anonymize), methods=["POST"]),
            Route(UNKNOWN_PATH, self.not_found, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(SecurityHeaders)],
            exception_handlers={404: self.not_found, 405: self.not_allowed},
        )

    def wrap(
        self, endpoint: str, handler: Callable[[Request], Awaitable[Response]], work: bool = True
    ) -> Callable:
        """The handler behind admission control, with every failure mapped to the documented errors.

        A work request's body is read first (with the body timeout), and only then does the request take
        one of the ``max_concurrency`` slots: a slow sender holds a connection, never a slot. Beyond the
        slots, or past the request deadline, the answer is a 503 with Retry-After at once. When every slot
        is already taken as the request arrives, it is refused before its body is read (no upload is
        received and decoded only to be shed) and the connection is closed, since its body was not read.
        """

        async def guarded(request: Request) -> Response:
            body_read = False
            try:
                if not work:
                    return await handler(request)
                self.admission.check_slots()
                # Starlette's Request.stream() replays a cached _body, so handlers read it unchanged.
                request._body = await read_body(request, self.limits.max_upload_bytes, self.config.body_timeout_s)
                body_read = True
                with self.admission.request():
                    with anyio.move_on_after(self.config.request_timeout_s):
                        return await handler(request)
                    raise OverloadedError(f"the request was not finished within {self.config.request_timeout_s} s")
            except Exception as exc:  # noqa: BLE001 - every failure becomes a documented answer
                response = self.error_answer(endpoint, exc)
                if work and not body_read:
                    response.headers["Connection"] = "close"
                return response

        return guarded

    def error_answer(self, endpoint: str, exc: BaseException) -> Response:
        """The documented error for ``exc`` (a task group's ExceptionGroup answers as its first error)."""
        exc = first_error(exc)
        if isinstance(exc, RequestError):
            metrics.REJECTED.labels(endpoint=endpoint, reason=exc.reason).inc()
            if exc.status == 503:
                return overloaded_response(exc.message)
            headers = {"Connection": "close"} if exc.status == 408 else None
            return error_response(exc.status, exc.message, exc.problems, headers=headers)
        if isinstance(exc, BackendError):
            metrics.REJECTED.labels(endpoint=endpoint, reason="unavailable").inc()
            return overloaded_response(f"model backend unavailable: {exc}")
        if _is_unavailable(exc):
            overloaded = "overload" in str(exc).lower() or not str(exc)
            metrics.REJECTED.labels(endpoint=endpoint, reason="overloaded" if overloaded else "unavailable").inc()
            if overloaded:
                return overloaded_response("the model worker is overloaded; retry later")
            return overloaded_response(f"model backend unavailable: {exc}")
        metrics.REJECTED.labels(endpoint=endpoint, reason="internal").inc()
        # Type and frames only: an exception's message or locals can quote request bytes.
        frames = "; ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__))
        logger.error("internal error in /%s: %s at %s", endpoint, type(exc).__name__, frames)
        return error_response(500, f"internal error ({type(exc).__name__}); it was logged without request data")

    async def not_found(self, request: Request, exc: Exception | None = None) -> Response:
        return error_response(404, "no such endpoint; see /docs.json")

    async def not_allowed(self, request: Request, exc: Exception) -> Response:
        return error_response(405, f"method {request.method} is not allowed here; see /docs.json")

    async def cpu(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run CPU work (decoding, alignment, packaging) in a worker thread, at most CPU_THREADS at once."""
        loop = asyncio.get_running_loop()
        if self._cpu is None or self._cpu[0] is not loop:  # a limiter belongs to one event loop
            self._cpu = (loop, anyio.CapacityLimiter(CPU_THREADS))
        return await anyio.to_thread.run_sync(function, *args, limiter=self._cpu[1])

    # -- static ------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return HTMLResponse(INDEX_HTML, headers=SECURITY_HEADERS)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def models(self, request: Request) -> Response:
        gan, recon = await self.engine.models()
        served = [info.to_dict() for info in (gan, recon) if info is not None]
        if _photoreal_available():
            photoreal = await anyio.to_thread.run_sync(self.photoreal_info)
            served.append({**photoreal.to_dict(), "licence": photoreal.metadata["licence"],
                           "backend": photoreal.metadata["backend"]})
        return JSONResponse(
            {"backend": self.engine.backend_kind, "methods": self.methods(gan), "models": served}
        )

    @staticmethod
    def methods(gan: ModelInfo | None) -> list[str]:
        return ((["gan"] if gan is not None else []) + (["3d"] if _renderer_available() else [])
                + (["photoreal"] if _photoreal_available() else []))

    # -- rendering ---------------------------------------------------------------------------------
    async def target_schema(self, method: str) -> tuple[AttributeSchema, ModelInfo | None]:
        if method == "3d":
            if not _renderer_available():
                raise RequestError(503, "the 3-D renderer is not installed on this server")
            return DEFAULT_SCHEMA, None
        if method == "photoreal":
            if not _photoreal_available():
                raise RequestError(503, "the photoreal method is not installed on this server (OpenVINO and the "
                                        "portrait model files)")
            return DEFAULT_SCHEMA, await anyio.to_thread.run_sync(self.photoreal_info)
        gan, _ = await self.engine.models()
        if gan is None:
            raise RequestError(503, "no generator model is served; use method '3d' or export a generator")
        return gan.schema, gan

    async def render(
        self, method: str, schema: AttributeSchema, values: np.ndarray, seeds: list[int],
        size: int | None = None, rgb: bool = False,
    ) -> np.ndarray:
        """(M, A) natural units + M seeds -> M uint8 (H, W[, C]) images; the GAN rows go to the batching
        worker in concurrent chunks (so this is the runtime's ``generate_images`` spread over the worker).
        The photoreal method runs in this process (OpenVINO, its own lock), at ``size`` and colour ``rgb``."""
        if method != "photoreal" and (size is not None or rgb):
            raise RequestError(422, "size and rgb apply to method 'photoreal' only",
                               [{"row": None, "field": "size" if size is not None else "rgb",
                                 "reason": "method photoreal only"}])
        if method == "photoreal":
            from surrogate.synthesis import synthesize

            return await anyio.to_thread.run_sync(
                lambda: synthesize("photoreal", values, seeds, schema=schema, size=size, rgb=rgb,
                                   backend=self.photoreal()))
        if method == "3d":
            from surrogate.synthesis_3d import render_surrogates_3d

            return await anyio.to_thread.run_sync(lambda: render_surrogates_3d(schema, values, seeds))
        gan, _ = await self.engine.models()
        z = generator_noise(seeds, require(gan, "generator"))
        step = max(1, self.engine.max_batch_rows)
        results: list[np.ndarray | None] = [None] * ((len(values) + step - 1) // step)

        async def run(i: int) -> None:
            results[i] = await self.engine.generate(
                values[i * step : (i + 1) * step], z[i * step : (i + 1) * step]
            )

        async with anyio.create_task_group() as group:
            for i in range(len(results)):
                group.start_soon(run, i)
        return to_hwc(np.concatenate(results))  # type: ignore[arg-type]

    def check_counts(self, records: int, n: int) -> None:
        lim = self.limits
        if n < 1:
            raise RequestError(
                422, f"n={n}; it must be at least 1", [{"row": None, "field": "n", "reason": "at least 1"}]
            )
        if records > lim.max_records:
            raise RequestError(
                413,
                f"{records} records; the limit is {lim.max_records}",
                [{"row": None, "field": "records", "reason": f"at most {lim.max_records} records"}],
            )
        if n > lim.max_n:
            raise RequestError(
                422,
                f"n={n}; the limit is {lim.max_n}",
                [{"row": None, "field": "n", "reason": f"at most {lim.max_n}"}],
            )
        if records * n > lim.max_images:
            raise RequestError(
                413,
                f"{records} records x n={n} images; the limit is {lim.max_images}",
                [{"row": None, "field": "n", "reason": f"records x n at most {lim.max_images}"}],
            )

    # -- /synthesize -------------------------------------------------------------------------------
    async def synthesize(self, request: Request) -> Response:
        kind = media_type(request)
        body = await read_body(request, self.limits.max_upload_bytes)
        if kind == "multipart/form-data":
            return await self.synthesize_upload(parse_multipart(body, request.headers["content-type"]))
        if kind not in ("application/json", ""):
            raise RequestError(415, f"content type {kind!r}: send application/json or multipart/form-data")
        data = parse_json(body)
        if isinstance(data, dict) and isinstance(data.get("records"), list):
            self.check_counts(len(data["records"]), data["n"] if isinstance(data.get("n"), int) else 1)
        req: SynthesizeRequest = validate_model(SynthesizeRequest, data)
        self.check_counts(len(req.records), req.n)
        schema, gan = await self.target_schema(req.method)
        try:
            values = schema.validate_records(req.records, source="records")
        except AttributeValidationError as exc:
            raise RequestError(422, str(exc), problems_from_attributes(exc)) from None
        seeds = self.request_seeds(req)
        rows = np.repeat(values, req.n, axis=0)
        total = len(seeds)
        if req.format == "png" and total != 1:
            raise RequestError(
                422,
                f"format 'png' returns one image, but this request makes {total}",
                [{"row": None, "field": "format", "reason": "use 'json' for several images"}],
            )
        with self.admission.images(total):
            images = await self.render(req.method, schema, rows, seeds, req.size, req.rgb)
        metrics.IMAGES.labels(
            endpoint="synthesize", method=req.method, backend=self.backend_label(req.method)
        ).inc(total)
        metrics.REQUEST_IMAGES.labels(endpoint="synthesize").observe(total)
        if total == 1 and req.format in ("auto", "png"):
            return Response(
                encode_png(images[0]),
                media_type="image/png",
                headers={"X-Surrogate-Seed": str(seeds[0]), **model_headers(req.method, gan)},
            )
        model = producing_model(req.method, gan)
        used = schema.to_records(rows)
        pngs = await self.cpu(encode_pngs, images)
        items = [
            {
                "record": i // req.n,
                "index": i % req.n,
                "seed": seed,
                "method": req.method,
                "backend": self.backend_label(req.method),
                "model": model,
                "attributes": used[i],
                "png_base64": base64.b64encode(png).decode("ascii"),
            }
            for i, (seed, png) in enumerate(zip(seeds, pngs, strict=True))
        ]
        return JSONResponse({"images": items})

    def backend_label(self, method: str) -> str:
        if method == "photoreal":
            return str(self.photoreal_info().metadata["backend"])
        return {"3d": "renderer"}.get(method, self.engine.backend_kind)

    def photoreal(self) -> Backend:
        """The photoreal method's backend (one per process and configuration): its synthesis network runs
        in this process, or on Triton when the service's backend is Triton."""
        from service.backends import photoreal_options
        from surrogate.synthesis import photoreal_backend

        return photoreal_backend(**photoreal_options(self.config))

    def photoreal_info(self) -> ModelInfo:
        """The photoreal model's facts (building its backend compiles nothing: that waits for the first image)."""
        return require(self.photoreal().gan, "photoreal")

    def request_seeds(self, req: SynthesizeRequest) -> list[int]:
        """The seed of every image of the request, record-major (the runtime's seed rule)."""
        if req.seeds is None:
            return self.checked(record_seeds, req.seed, len(req.records), req.n)
        if len(req.seeds) != len(req.records):
            raise RequestError(
                422,
                f"{len(req.seeds)} seeds for {len(req.records)} records",
                [{"row": None, "field": "seeds", "reason": "give one seed per record"}],
            )
        for row, seed in enumerate(req.seeds):
            try:
                check_seed(seed)
            except ValueError as exc:
                raise RequestError(
                    422, str(exc), [{"row": row, "field": "seeds", "reason": str(exc)}]
                ) from None
        return self.checked(expand_seeds, req.seeds, req.n)

    @classmethod
    def image_seeds(cls, seed: int, n: int) -> list[int]:
        return cls.checked(image_seeds, seed, n)

    @staticmethod
    def checked(rule: Callable[..., _T], *args: Any) -> _T:
        """Apply a seeding rule of surrogate.noise; a seed out of range is the caller's 422."""
        try:
            return rule(*args)
        except ValueError as exc:
            raise RequestError(422, str(exc), [{"row": None, "field": "seed", "reason": str(exc)}]) from None

    async def synthesize_upload(self, parts_list: list[Part]) -> Response:
        parts = {p.name: p for p in parts_list}
        upload = parts.get("file")
        if upload is None or upload.filename is None:
            raise RequestError(
                422,
                "multipart upload needs a file field named 'file'",
                [{"row": None, "field": "file", "reason": "is missing"}],
            )
        method = form_choice(parts, "method", "gan", METHODS)
        file_format = form_choice(
            parts, "format", "auto", ("auto", "openface", "pyfeat", "libreface", "canonical", "json")
        )
        seed, n = form_int(parts, "seed", 0), form_int(parts, "n", 1)
        self.image_seeds(seed, 1)
        self.check_counts(1, n)
        schema, gan = await self.target_schema(method)
        table = await anyio.to_thread.run_sync(read_attribute_upload, upload, file_format, schema)
        self.check_counts(len(table.ids), n)
        seeds = self.checked(record_seeds, seed, len(table.ids), n)
        with self.admission.images(len(seeds)):
            images = (
                await self.render(method, schema, np.repeat(table.values, n, axis=0), seeds)
                if seeds
                else np.zeros((0, 1, 1), np.uint8)
            )
        metrics.IMAGES.labels(endpoint="synthesize", method=method, backend=self.backend_label(method)).inc(
            len(seeds)
        )
        metrics.REQUEST_IMAGES.labels(endpoint="synthesize").observe(len(seeds))
        if table.rejected:
            metrics.REJECTED.labels(endpoint="synthesize", reason="row").inc(len(table.rejected))
        archive = await self.cpu(build_zip, table, images, seeds, n, method, gan)
        return Response(
            archive,
            media_type="application/zip",
            headers={
                "Content-Disposition": 'attachment; filename="surrogates.zip"',
                **model_headers(method, gan),
            },
        )

    # -- /extract ----------------------------------------------------------------------------------
    async def load_images(
        self, request: Request, single: bool
    ) -> tuple[list[tuple[str, bytes]], dict[str, Part]]:
        """(field, bytes) of every uploaded image, plus the other form fields."""
        kind = media_type(request)
        body = await read_body(request, self.limits.max_upload_bytes)
        if kind == "multipart/form-data":
            parts = parse_multipart(body, request.headers["content-type"])
            files = [(p.name or "image", p.data) for p in parts if p.filename is not None]
            return files, {p.name: p for p in parts if p.filename is None}
        if kind.startswith("image/") or kind == "application/octet-stream":
            return [("body", body)], {}
        raise RequestError(
            415, f"content type {kind!r}: send application/json, multipart/form-data or image/*"
        )

    async def recon_info(self) -> ModelInfo:
        _, recon = await self.engine.models()
        if recon is None:
            raise RequestError(503, "no reconstruction model is served")
        return recon

    async def extract(self, request: Request) -> Response:
        if media_type(request) == "application/json":
            req: ImageRequest = validate_model(
                ImageRequest, parse_json(await read_body(request, self.limits.max_upload_bytes))
            )
            files = [(f"images.{i}", decode_base64(text, f"images.{i}")) for i, text in enumerate(req.images)]
            aligned = req.aligned
        else:
            files, fields = await self.load_images(request, single=False)
            merged = {**fields, **{k: Part(k, None, "", v.encode()) for k, v in request.query_params.items()}}
            aligned = form_choice(merged, "aligned", "false", ("true", "false")) == "true"
        if not files:
            raise RequestError(
                422, "no image in the request", [{"row": None, "field": "images", "reason": "empty"}]
            )
        if len(files) > self.limits.max_extract_images:
            raise RequestError(
                413,
                f"{len(files)} images; the limit is {self.limits.max_extract_images}",
                [{"row": None, "field": "images", "reason": "too many images"}],
            )
        recon = await self.recon_info()
        crops: list[np.ndarray] = []
        results: list[dict[str, Any]] = []
        pixels = [self.limits.max_request_pixels]
        for index, (field, data) in enumerate(files):
            try:
                crops.append(await self.prepare_crop(data, recon, field, aligned, pixels))
                results.append({"index": index, "status": "ok", "reason": None, "attributes": None})
            except RequestError as exc:
                metrics.REJECTED.labels(endpoint="extract", reason="image").inc()
                results.append(
                    {"index": index, "status": "rejected", "reason": exc.message, "attributes": None}
                )
        del files
        if crops:
            with self.admission.images(len(crops)):
                values = await self.engine.reconstruct(np.stack(crops))
            records = iter(recon.schema.to_records(values))
            for result in results:
                if result["status"] == "ok":
                    result["attributes"] = next(records)
        metrics.REQUEST_IMAGES.labels(endpoint="extract").observe(len(results))
        return JSONResponse({"model": {"name": recon.name, "version": recon.version}, "results": results})

    async def prepare_crop(
        self, data: bytes, recon: ModelInfo, field: str, aligned: bool, pixels: list[int] | None = None
    ) -> np.ndarray:
        """Image bytes -> the face in the project's framing, (C, S, S) uint8 in the model's input size.

        Decoded in memory and in a worker thread (``crop_from_bytes``, at most CPU_THREADS at once), so
        the event loop keeps answering /livez and other requests while a large upload is decoded.
        ``pixels`` is the request's remaining pixel budget, shared by its images.
        """
        _, channels, height, width = recon.input("image").shape
        budget = pixels if pixels is not None else [self.limits.max_request_pixels]
        return await self.cpu(
            crop_from_bytes, data, (channels, height, width), field, aligned, self.limits.max_image_side, budget
        )

    # -- /anonymize --------------------------------------------------------------------------------
    async def anonymize(self, request: Request) -> Response:
        if media_type(request) == "application/json":
            req: AnonymizeRequest = validate_model(
                AnonymizeRequest, parse_json(await read_body(request, self.limits.max_upload_bytes))
            )
            data, method, seed, output = decode_base64(req.image, "image"), req.method, req.seed, req.format
            aligned, size, rgb = req.aligned, req.size, req.rgb
        else:
            files, fields = await self.load_images(request, single=True)
            if len(files) != 1:
                raise RequestError(
                    422,
                    f"send exactly one image, got {len(files)}",
                    [{"row": None, "field": "image", "reason": "exactly one image"}],
                )
            data = files[0][1]
            merged = {**fields, **{k: Part(k, None, "", v.encode()) for k, v in request.query_params.items()}}
            method = form_choice(merged, "method", "gan", METHODS)
            output = form_choice(merged, "format", "json", ("json", "png"))
            aligned = form_choice(merged, "aligned", "false", ("true", "false")) == "true"
            seed = form_int(merged, "seed", 0)
            self.image_seeds(seed, 1)
            size, rgb = None, False
        recon = await self.recon_info()
        schema, gan = await self.target_schema(method)
        crop = await self.prepare_crop(data, recon, "image", aligned)
        del data  # the raw image goes no further than this function
        with self.admission.images(1):
            estimated = await self.engine.reconstruct(crop[None])
        try:
            values = schema.clip(reorder(estimated, recon.schema, schema))
        except ValueError as exc:
            raise RequestError(503, f"the served models do not fit together: {exc}") from None
        with self.admission.images(1):
            image = (await self.render(method, schema, values, [seed], size, rgb))[0]
        metrics.IMAGES.labels(endpoint="anonymize", method=method, backend=self.backend_label(method)).inc()
        attributes = schema.to_records(values)[0]
        png = encode_png(image)
        if output == "png":
            return Response(
                png,
                media_type="image/png",
                headers={
                    "X-Surrogate-Seed": str(seed),
                    "X-Surrogate-Attributes": json.dumps(attributes),
                    **model_headers(method, gan),
                },
            )
        return JSONResponse(
            {
                "seed": seed,
                "method": method,
                "model": producing_model(method, gan),
                "attributes": attributes,
                "png_base64": base64.b64encode(png).decode("ascii"),
            }
        )


_ALIGN_LOCK = threading.Lock()


def align_in_turn(image: np.ndarray, size: int, channels: int) -> np.ndarray | None:
    """``align_face`` for the worker threads: one FaceLandmarker, used by one thread at a time."""
    from surrogate.face_align import align_face

    with _ALIGN_LOCK:
        face = align_face(image, size, channels=channels)
    return None if face is None else face.crop


def crop_from_bytes(
    data: bytes, shape: tuple[int, int, int], field: str, aligned: bool, max_side: int, pixels: list[int]
) -> np.ndarray:
    """Image bytes -> (C, H, W) uint8 crop of ``shape``; any unreadable or hostile file is a 4xx naming
    ``field``. Unless ``aligned``, the face is found and framed by ``surrogate.face_align``. ``pixels``
    holds the request's remaining pixel budget: it bounds the decoding work of one request."""
    channels, height, width = shape
    try:
        with Image.open(io.BytesIO(data)) as probe:
            size = probe.size
    except Exception:  # noqa: BLE001 - PIL raises many types for garbage; decode_image names it below
        size = (0, 0)
    if max(size) > max_side:
        raise RequestError(413, f"{field}: image side {max(size)} is larger than {max_side}",
                           [{"row": None, "field": field, "reason": f"side larger than {max_side}"}])
    if size[0] * size[1] > pixels[0]:
        raise RequestError(413, f"{field}: the request's images exceed its budget of decoded pixels",
                           [{"row": None, "field": field, "reason": "over the request's pixel budget"}])
    pixels[0] -= size[0] * size[1]
    try:
        image = decode_image(data, grayscale=channels == 1 and aligned, name=field)
    except ImageDecodeError as exc:
        raise RequestError(
            422, str(exc), [{"row": None, "field": field, "reason": "not a readable image"}]
        ) from None
    if not aligned:
        face = align_in_turn(image, height, channels)
        if face is None:
            raise RequestError(
                422, f"{field}: no face found", [{"row": None, "field": field, "reason": "no face found"}]
            )
        image = face
    if image.shape[:2] != (height, width):
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return image[None] if image.ndim == 2 else np.transpose(image, (2, 0, 1))


def encode_pngs(images: np.ndarray) -> list[bytes]:
    return [encode_png(image) for image in images]


class OverloadedError(RequestError):
    """A request the service sheds (503 + Retry-After) instead of queueing it behind the work."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message, reason="overloaded")


class Admission:
    """Admission control ahead of the work: requests being worked on, and images queued for the model
    worker. Beyond either limit a request is refused at once (``OverloadedError``) rather than queued past
    the worker's deadline, so goodput under overload stays at the worker's saturation throughput.

    The image limit adapts to the worker's real speed (AIMD, as TCP does): it shrinks by a fifth when a
    model call took longer than ``target_s`` (half the worker's queue deadline) and halves when the
    worker answered "overloaded"; each call in time adds a quarter of its images back, up to
    ``max_images``. Plain counters: only the event loop's thread touches them, between awaits.
    """

    def __init__(self, max_requests: int, max_images: int, target_s: float = 2.5, min_images: int = 16) -> None:
        self.max_requests, self.max_images = max_requests, max_images
        self.target_s, self.min_images = target_s, min(min_images, max_images)
        self.image_limit = float(max_images)
        self.requests = self.queued_images = 0

    def check_slots(self) -> None:
        """Raise ``OverloadedError`` when every request slot is taken."""
        if self.requests >= self.max_requests:
            raise OverloadedError(f"{self.requests} requests are being worked on; retry later")

    @contextmanager
    def request(self) -> Iterator[None]:
        self.check_slots()
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1

    @contextmanager
    def images(self, count: int) -> Iterator[None]:
        # A request larger than the whole limit still runs when nothing else is queued.
        if self.queued_images and self.queued_images + count > self.image_limit:
            raise OverloadedError(f"{self.queued_images} images are queued for the models; retry later")
        self.queued_images += count
        start = time.monotonic()
        try:
            yield
        except Exception as exc:
            if _is_unavailable(first_error(exc)):
                self.image_limit = max(self.min_images, self.image_limit / 2)
            raise
        else:
            if time.monotonic() - start > self.target_s:
                self.image_limit = max(self.min_images, self.image_limit * 0.8)
            else:
                self.image_limit = min(self.max_images, self.image_limit + count / 4)
        finally:
            self.queued_images -= count


class SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` on every answer of the API (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def first_error(exc: BaseException) -> BaseException:
    """The first leaf of an ExceptionGroup (anyio task groups wrap even a single failure), else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _is_unavailable(exc: BaseException) -> bool:
    """BentoML's 'process is overloaded' / service-unavailable errors from the worker proxy."""
    try:
        from bentoml.exceptions import BentoMLException, ServiceUnavailable
    except ImportError:  # pragma: no cover - bentoml is a dependency of the service
        return False
    if isinstance(exc, ServiceUnavailable):
        return True
    return isinstance(exc, BentoMLException) and int(getattr(exc, "error_code", 500)) == 503


def _photoreal_available() -> bool:
    from surrogate.photoreal import photoreal_available

    return photoreal_available()


def _renderer_available() -> bool:
    try:
        import surrogate.synthesis_3d  # noqa: F401
    except ImportError:
        return False
    return True
