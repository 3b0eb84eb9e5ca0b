"""Request parsing for the HTTP API: bodies, multipart parts, form fields and uploads -> values, or a
``RequestError`` (a 4xx naming the field or row).

Everything is parsed in memory: an uploaded attribute file is read from its bytes by the adapters
(``InMemoryFile``) and uploaded images are decoded from theirs, so no request content reaches disk,
logs or metrics.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from surrogate.imageio import safe_file_stem
from surrogate.schema import AttributeSchema, AttributeValidationError


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
            408: "slow_client",
            413: "too_large",
            415: "media_type",
            422: "invalid",
            503: "unavailable",
        }.get(status, "other")


MAX_PROBLEMS = 100  # problems listed in one error body; the rest are only counted
MAX_TEXT = 300  # characters of one message, field or reason (they may echo request content)


def _clip(text: object) -> str:
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def error_response(
    status: int, message: str, problems: Sequence[dict[str, Any]] = (), headers: dict[str, str] | None = None
) -> JSONResponse:
    """The documented error body, bounded whatever the request: the first ``MAX_PROBLEMS`` problems plus
    their total count, and every text clipped (a body of 250,000 unknown keys answers in kilobytes)."""
    shown = [
        {key: (_clip(value) if isinstance(value, str) else value) for key, value in problem.items()}
        for problem in problems[:MAX_PROBLEMS]
    ]
    error: dict[str, Any] = {"status": status, "message": _clip(message), "problems": shown}
    if len(problems) > MAX_PROBLEMS:
        error["problems_total"] = len(problems)
        error["message"] = _clip(message) + f" ({len(problems)} problems; the first {MAX_PROBLEMS} are listed)"
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def overloaded_response(message: str, retry_after_s: int = 1) -> JSONResponse:
    """503 with ``Retry-After``: the documented answer whenever the service sheds load."""
    return error_response(503, message, headers={"Retry-After": str(retry_after_s)})


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


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, refusing (413) more than ``limit`` bytes before reading them all, and (408)
    a body that has not fully arrived within ``timeout_s`` (a slow or stalled sender)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes is larger than the limit of {limit} bytes")
    chunks, size = [], 0
    with anyio.move_on_after(timeout_s) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise RequestError(408, f"the request body did not arrive within {timeout_s:g} s", reason="slow_client")
    return b"".join(chunks)


MAX_INT_DIGITS = 40  # no number of the API has more digits (seeds are < 2**64)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def parse_json(body: bytes) -> Any:
    if not body:
        raise RequestError(400, "empty request body; expected JSON")
    try:
        return json.loads(body, parse_int=_bounded_int)
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and over-long integers
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
    except (AttributeFileError, ValueError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
        message = str(exc)
        if message.startswith(f"{name}: "):
            message = f"file '{name}': " + message[len(name) + 2:]
        column = getattr(exc, "column", None)
        raise RequestError(
            422, message, [{"row": None, "field": column or "file", "reason": message}]
        ) from None
