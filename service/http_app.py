"""The public HTTP API as a Starlette app, independent of how the models are run.

BentoML mounts this app (``service.service``) and hands it an ``Engine`` that forwards model calls to
its adaptive-batching worker; tests can hand it a ``LocalEngine`` instead. Everything a request can
get wrong is answered here with a 4xx JSON error naming the field or row; model trouble is a 503.

Privacy rules kept here: uploaded images and attribute files are parsed in memory (an attribute file
goes to a private temporary folder only because the adapters read paths, and is deleted at once), no
request content is logged or put in metrics, and /anonymize answers with the surrogate and the
attributes only.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from service import metrics
from service.config import ServiceConfig
from service.schemas import AnonymizeRequest, ImageRequest, SynthesizeRequest, openapi_document
from surrogate.imageio import ImageDecodeError, decode_image, encode_png, safe_file_stem
from surrogate.noise import check_seed, expand_seeds, image_seeds
from surrogate.runtime import Backend, BackendError, ModelInfo, generator_noise, record_seeds, require, to_hwc
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema, AttributeValidationError
from surrogate.synthesis import reorder

_T = TypeVar("_T")


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
    import time

    start = time.perf_counter()
    result = function(*arrays)
    metrics.BACKEND_LATENCY.labels(model=model, backend=backend).observe(time.perf_counter() - start)
    metrics.BATCH_ROWS.labels(model=model).observe(len(arrays[0]))
    return result


# -- errors ------------------------------------------------------------------------------------------
class RequestError(Exception):
    """A 4xx (or 503) answer: status, message and the problems naming row/field."""

    def __init__(
        self, status: int, message: str, problems: Sequence[dict[str, Any]] = (), reason: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = list(problems)
        self.reason = reason or {
            400: "malformed",
            404: "not_found",
            413: "too_large",
            415: "media_type",
            422: "invalid",
            503: "unavailable",
        }.get(status, "other")


def error_response(status: int, message: str, problems: Sequence[dict[str, Any]] = ()) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "message": message, "problems": list(problems)}}, status_code=status
    )


def problems_from_pydantic(exc: ValidationError) -> list[dict[str, Any]]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error.get("loc", ()))
        row = None
        if len(loc) >= 2 and loc[0] in ("records", "seeds", "images") and isinstance(loc[1], int):
            row = loc[1]
        field = ".".join(str(part) for part in loc) or "body"
        problems.append({"row": row, "field": field, "reason": error.get("msg", "invalid")})
    return problems


def problems_from_attributes(exc: AttributeValidationError) -> list[dict[str, Any]]:
    return [{"row": p.row, "field": p.field, "reason": p.reason} for p in exc.problems]


# -- request bodies ----------------------------------------------------------------------------------
@dataclass
class Part:
    """One multipart/form-data part, in memory."""

    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def text(self) -> str:
        try:
            return self.data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise RequestError(400, f"form field '{self.name}' is not UTF-8 text") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes is larger than the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise RequestError(400, "empty request body; expected JSON")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """multipart/form-data -> parts, entirely in memory (Starlette would spool big files to disk)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "multipart/form-data without a boundary")
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    state: dict[str, Any] = {"field": b"", "value": b"", "data": []}

    def on_part_begin() -> None:
        headers.clear()
        state["data"] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        headers[state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        parts.append(
            Part(
                name,
                filename.decode("utf-8", "replace") if filename is not None else None,
                headers.get(b"content-type", b"").decode("latin-1"),
                b"".join(state["data"]),
            )
        )

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - python_multipart raises several parse errors
        raise RequestError(400, f"malformed multipart/form-data body ({exc.__class__.__name__})") from None
    return parts


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def validate_model(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestError(422, f"invalid {model.__name__}", problems_from_pydantic(exc)) from None


def form_int(parts: dict[str, Part], name: str, default: int) -> int:
    if name not in parts:
        return default
    text = parts[name].text
    if not re.fullmatch(r"\d{1,19}", text):
        raise RequestError(
            422,
            f"form field '{name}' must be a non-negative integer",
            [{"row": None, "field": name, "reason": f"not a non-negative integer: {text[:40]!r}"}],
        )
    return int(text)


def form_choice(parts: dict[str, Part], name: str, default: str, choices: Sequence[str]) -> str:
    if name not in parts:
        return default
    value = parts[name].text
    if value not in choices:
        raise RequestError(
            422,
            f"form field '{name}' must be one of {list(choices)}",
            [{"row": None, "field": name, "reason": f"expected one of {list(choices)}"}],
        )
    return value


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

    @property
    def engine(self) -> Engine:
        return self._engine_factory()

    def app(self) -> Starlette:
        routes = [
            Route("/", self.index, methods=["GET"]),
            Route("/docs.json", self.openapi, methods=["GET"]),
            Route("/models", self.wrap("models", self.models), methods=["GET"]),
            Route("/synthesize", self.wrap("synthesize", self.synthesize), methods=["POST"]),
            Route("/extract", self.wrap("extract", self.extract), methods=["POST"]),
            Route("/anonymize", self.wrap("anonymize", self.anonymize), methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def wrap(self, endpoint: str, handler: Callable[[Request], Awaitable[Response]]) -> Callable:
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestError as exc:
                metrics.REJECTED.labels(endpoint=endpoint, reason=exc.reason).inc()
                return error_response(exc.status, exc.message, exc.problems)
            except BackendError as exc:
                metrics.REJECTED.labels(endpoint=endpoint, reason="unavailable").inc()
                return error_response(503, str(exc))
            except Exception as exc:
                if _is_unavailable(exc):
                    overloaded = "overload" in str(exc).lower() or not str(exc)
                    reason = "overloaded" if overloaded else "unavailable"
                    metrics.REJECTED.labels(endpoint=endpoint, reason=reason).inc()
                    if overloaded:
                        return error_response(503, "the model worker is overloaded; retry later")
                    return error_response(503, f"model backend unavailable: {exc}")
                raise

        return guarded

    # -- static ------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return HTMLResponse(INDEX_HTML, headers=SECURITY_HEADERS)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def models(self, request: Request) -> Response:
        gan, recon = await self.engine.models()
        served = [info.to_dict() for info in (gan, recon) if info is not None]
        return JSONResponse(
            {"backend": self.engine.backend_kind, "methods": self.methods(gan), "models": served}
        )

    @staticmethod
    def methods(gan: ModelInfo | None) -> list[str]:
        return (["gan"] if gan is not None else []) + (["3d"] if _renderer_available() else [])

    # -- rendering ---------------------------------------------------------------------------------
    async def target_schema(self, method: str) -> tuple[AttributeSchema, ModelInfo | None]:
        if method == "3d":
            if not _renderer_available():
                raise RequestError(503, "the 3-D renderer is not installed on this server")
            return DEFAULT_SCHEMA, None
        gan, _ = await self.engine.models()
        if gan is None:
            raise RequestError(503, "no generator model is served; use method '3d' or export a generator")
        return gan.schema, gan

    async def render(
        self, method: str, schema: AttributeSchema, values: np.ndarray, seeds: list[int]
    ) -> np.ndarray:
        """(M, A) natural units + M seeds -> M uint8 (H, W[, C]) images; the GAN rows go to the batching
        worker in concurrent chunks (so this is the runtime's ``generate_images`` spread over the worker)."""
        if method == "3d":
            from surrogate.surrogate3d import render_surrogates_3d

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
        images = await self.render(req.method, schema, rows, seeds)
        metrics.IMAGES.labels(
            endpoint="synthesize", method=req.method, backend=self.backend_label(req.method)
        ).inc(total)
        metrics.REQUEST_IMAGES.labels(endpoint="synthesize").observe(total)
        if total == 1 and req.format in ("auto", "png"):
            return Response(
                encode_png(images[0]),
                media_type="image/png",
                headers={"X-Surrogate-Seed": str(seeds[0]), **self.model_headers(req.method, gan)},
            )
        model = producing_model(req.method, gan)
        used = schema.to_records(rows)
        items = [
            {
                "record": i // req.n,
                "index": i % req.n,
                "seed": seed,
                "method": req.method,
                "backend": self.backend_label(req.method),
                "model": model,
                "attributes": used[i],
                "png_base64": base64.b64encode(encode_png(image)).decode("ascii"),
            }
            for i, (seed, image) in enumerate(zip(seeds, images, strict=True))
        ]
        return JSONResponse({"images": items})

    def backend_label(self, method: str) -> str:
        return "renderer" if method == "3d" else self.engine.backend_kind

    @staticmethod
    def model_headers(method: str, gan: ModelInfo | None) -> dict[str, str]:
        made_by = producing_model(method, gan)
        if made_by is None:
            return {}
        return {"X-Surrogate-Model": made_by["name"], "X-Surrogate-Model-Version": str(made_by["version"])}

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
        method = form_choice(parts, "method", "gan", ("gan", "3d"))
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
        archive = build_zip(table, images, seeds, n, method, gan)
        return Response(
            archive,
            media_type="application/zip",
            headers={
                "Content-Disposition": 'attachment; filename="surrogates.zip"',
                **self.model_headers(method, gan),
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
        else:
            files, _ = await self.load_images(request, single=False)
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
        for index, (field, data) in enumerate(files):
            try:
                crops.append(self.prepare_crop(data, recon, field))
                results.append({"index": index, "status": "ok", "reason": None, "attributes": None})
            except RequestError as exc:
                metrics.REJECTED.labels(endpoint="extract", reason="image").inc()
                results.append(
                    {"index": index, "status": "rejected", "reason": exc.message, "attributes": None}
                )
        del files
        if crops:
            values = await self.engine.reconstruct(np.stack(crops))
            records = iter(recon.schema.to_records(values))
            for result in results:
                if result["status"] == "ok":
                    result["attributes"] = next(records)
        metrics.REQUEST_IMAGES.labels(endpoint="extract").observe(len(results))
        return JSONResponse({"model": {"name": recon.name, "version": recon.version}, "results": results})

    def prepare_crop(self, data: bytes, recon: ModelInfo, field: str) -> np.ndarray:
        """Image bytes -> (C, S, S) uint8 in the model's input size, decoded in memory."""
        _, channels, height, width = recon.input("image").shape
        try:
            with Image.open(io.BytesIO(data)) as probe:
                side = max(probe.size)
        except Exception:  # noqa: BLE001 - PIL raises many types for garbage
            side = 0
        if side > self.limits.max_image_side:
            raise RequestError(413, f"{field}: image side {side} is larger than {self.limits.max_image_side}")
        try:
            image = decode_image(data, grayscale=channels == 1, name=field)
        except ImageDecodeError as exc:
            raise RequestError(
                422, str(exc), [{"row": None, "field": field, "reason": "not a readable image"}]
            ) from None
        if image.shape[:2] != (height, width):
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
        return image[None] if image.ndim == 2 else np.transpose(image, (2, 0, 1))

    # -- /anonymize --------------------------------------------------------------------------------
    async def anonymize(self, request: Request) -> Response:
        if media_type(request) == "application/json":
            req: AnonymizeRequest = validate_model(
                AnonymizeRequest, parse_json(await read_body(request, self.limits.max_upload_bytes))
            )
            data, method, seed, output = decode_base64(req.image, "image"), req.method, req.seed, req.format
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
            method = form_choice(merged, "method", "gan", ("gan", "3d"))
            output = form_choice(merged, "format", "json", ("json", "png"))
            seed = form_int(merged, "seed", 0)
            self.image_seeds(seed, 1)
        recon = await self.recon_info()
        schema, gan = await self.target_schema(method)
        crop = self.prepare_crop(data, recon, "image")
        del data  # the raw image goes no further than this function
        estimated = await self.engine.reconstruct(crop[None])
        try:
            values = schema.clip(reorder(estimated, recon.schema, schema))
        except ValueError as exc:
            raise RequestError(503, f"the served models do not fit together: {exc}") from None
        image = (await self.render(method, schema, values, [seed]))[0]
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
                    **self.model_headers(method, gan),
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


def decode_base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            422, f"{field}: not valid base64", [{"row": None, "field": field, "reason": "not valid base64"}]
        ) from None


def read_attribute_upload(upload: Part, file_format: str, schema: AttributeSchema) -> Any:
    """Parse an uploaded attribute file in memory with the adapters (nothing is written to disk); errors
    name the upload's file."""
    from surrogate.adapters import AttributeFileError, InMemoryFile, read_attributes

    name = safe_file_stem(Path(upload.filename or "upload.csv").name, fallback="upload.csv", max_length=100)
    try:
        return read_attributes(InMemoryFile(name, upload.data), format=file_format, schema=schema)
    except (AttributeFileError, ValueError, UnicodeDecodeError) as exc:
        message = str(exc)
        if message.startswith(f"{name}: "):
            message = f"file '{name}': " + message[len(name) + 2:]
        column = getattr(exc, "column", None)
        raise RequestError(
            422, message, [{"row": None, "field": column or "file", "reason": message}]
        ) from None


def producing_model(method: str, gan: ModelInfo | None) -> dict[str, Any] | None:
    """``{"name", "version"}`` of what drew a surrogate: the served generator, or the 3-D face model at
    the renderer's version (a surrogate depends only on attributes, seed and this)."""
    if method == "3d":
        from surrogate.render import FACE_MODEL_3D, RENDERER_VERSION

        return {"name": FACE_MODEL_3D, "version": int(RENDERER_VERSION)}
    return {"name": gan.name, "version": gan.version} if gan is not None else None


def build_zip(
    table: Any, images: np.ndarray, seeds: list[int], n: int, method: str, gan: ModelInfo | None
) -> bytes:
    """PNGs named ``<id>_<k>.png`` plus status.csv with one line per source row (ok or rejected + reason)."""
    buffer = io.BytesIO()
    status = io.StringIO()
    writer = csv.writer(status)
    writer.writerow(["row", "id", "status", "reason", "seed", "files", "method", "model", "model_version"])
    made_by = producing_model(method, gan)
    model_name, model_version = (made_by["name"], made_by["version"]) if made_by else ("", "")
    used_names: set[str] = set()
    rows: list[tuple[int, list[Any]]] = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for r, (row_id, source_row) in enumerate(
            zip(table.ids, table.rows or range(1, len(table.ids) + 1), strict=False)
        ):
            stem = safe_file_stem(row_id, fallback=f"row{source_row}", max_length=120)
            while stem in used_names:
                stem += "_"
            used_names.add(stem)
            names = []
            for k in range(n):
                name = f"images/{stem}_{k}.png"
                archive.writestr(name, encode_png(images[r * n + k]))
                names.append(name)
            rows.append(
                (
                    source_row,
                    [
                        source_row,
                        row_id,
                        "ok",
                        "",
                        seeds[r * n],
                        " ".join(names),
                        method,
                        model_name,
                        model_version,
                    ],
                )
            )
        for rejected in table.rejected:
            rows.append(
                (
                    rejected.row,
                    [
                        rejected.row,
                        rejected.id,
                        "rejected",
                        rejected.reason,
                        "",
                        "",
                        method,
                        model_name,
                        model_version,
                    ],
                )
            )
        for _, line in sorted(rows, key=lambda item: item[0]):
            writer.writerow(line)
        archive.writestr("status.csv", status.getvalue())
    return buffer.getvalue()


def _is_unavailable(exc: Exception) -> bool:
    """BentoML's 'process is overloaded' / service-unavailable errors from the worker proxy."""
    try:
        from bentoml.exceptions import BentoMLException, ServiceUnavailable
    except ImportError:  # pragma: no cover - bentoml is a dependency of the service
        return False
    if isinstance(exc, ServiceUnavailable):
        return True
    return isinstance(exc, BentoMLException) and int(getattr(exc, "error_code", 500)) == 503


def _renderer_available() -> bool:
    try:
        import surrogate.surrogate3d  # noqa: F401
    except ImportError:
        return False
    return True
