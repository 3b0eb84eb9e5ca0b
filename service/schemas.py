"""Request and response models of the HTTP API, and the OpenAPI document built from them.

The pydantic models are the contract the OpenAPI document (``/docs.json``) publishes and the fuzz test
exercises. Attribute values are deliberately typed loosely here (``dict[str, Any]``): the attribute
schema itself (``AttributeSchema.validate_records``) checks them, so every problem comes back with its
row and field in one response instead of pydantic's generic messages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from surrogate.noise import MAX_SEED
from surrogate.synthesis import DEFAULT_PHOTOREAL_SIZE

Method = Literal["gan", "3d", "photoreal"]
OutputFormat = Literal["auto", "png", "json"]
PhotorealSize = Literal[64, 128, 256]
SIZE_DESCRIPTION = f"output side in pixels, method photoreal only (default {DEFAULT_PHOTOREAL_SIZE})"
RGB_DESCRIPTION = "colour instead of grey, method photoreal only"


class SynthesizeRequest(BaseModel):
    """Attribute records -> surrogates. Record r's copy k uses seed ``seeds[r] + k`` (``seeds`` given)
    or ``seed + r * n + k``; the same seed, attributes and model version always give the same image."""

    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]] = Field(min_length=1, description="attribute records in natural units")
    method: Method = "gan"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    seeds: list[int] | None = Field(None, description="one seed per record (overrides seed)")
    n: int = Field(1, ge=1, description="surrogates per record")
    format: OutputFormat = Field("auto", description="auto: one image -> image/png, several -> JSON")
    size: PhotorealSize | None = Field(None, description=SIZE_DESCRIPTION)
    rgb: bool = Field(False, description=RGB_DESCRIPTION)


class ImageRequest(BaseModel):
    """Images as base64 strings (multipart/form-data uploads are accepted too)."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(min_length=1, description="base64-encoded image files (PNG, JPEG, ...)")
    aligned: bool = Field(False, description="the images are already aligned face crops: skip face detection")


class AnonymizeRequest(BaseModel):
    """One face image -> one surrogate with the same attributes."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="base64-encoded image file of one face photo (or crop, with aligned)")
    aligned: bool = Field(False, description="the image is already an aligned face crop: skip face detection")
    method: Method = "gan"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    format: Literal["json", "png"] = "json"
    size: PhotorealSize | None = Field(None, description=SIZE_DESCRIPTION)
    rgb: bool = Field(False, description=RGB_DESCRIPTION)


class ModelRef(BaseModel):
    name: str
    version: int


class SurrogateImage(BaseModel):
    record: int
    index: int
    seed: int
    method: Method
    backend: str
    model: ModelRef | None
    attributes: dict[str, float]
    png_base64: str


class SynthesizeResponse(BaseModel):
    images: list[SurrogateImage]


class ExtractResult(BaseModel):
    index: int
    status: Literal["ok", "rejected"]
    reason: str | None = None
    attributes: dict[str, float] | None = None


class ExtractResponse(BaseModel):
    model: ModelRef
    results: list[ExtractResult]


class AnonymizeResponse(BaseModel):
    seed: int
    method: Method
    model: ModelRef | None
    attributes: dict[str, float]
    png_base64: str


class Problem(BaseModel):
    row: int | None = None
    field: str
    reason: str


class ErrorBody(BaseModel):
    status: int
    message: str
    problems: list[Problem] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


ERRORS = {
    str(code): {"description": text, "content": _json(ErrorResponse)}
    for code, text in (
        (400, "malformed request"),
        (404, "no such model"),
        (408, "the request body did not arrive in time (SURROGATE_BODY_TIMEOUT_S)"),
        (413, "request too large"),
        (415, "unsupported content type"),
        (422, "invalid values; problems name row and field"),
        (503, "overloaded or models not loaded; retry after the Retry-After header's seconds"),
    )
}


def openapi_document(version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI 3.0 document of the public API (served at ``/docs.json``)."""
    models = [
        SynthesizeRequest,
        ImageRequest,
        AnonymizeRequest,
        ModelRef,
        SurrogateImage,
        SynthesizeResponse,
        ExtractResult,
        ExtractResponse,
        AnonymizeResponse,
        Problem,
        ErrorBody,
        ErrorResponse,
    ]
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    upload_form = {
        "type": "object",
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "description": "attribute file (OpenFace, py-feat, LibreFace, canonical CSV or JSON)",
            },
            "method": {"type": "string", "enum": ["gan", "3d", "photoreal"]},
            "seed": {"type": "integer", "minimum": 0},
            "n": {"type": "integer", "minimum": 1},
            "format": {
                "type": "string",
                "enum": ["auto", "openface", "pyfeat", "libreface", "canonical", "json"],
            },
        },
        "required": ["file"],
    }
    image_form = {
        "type": "object",
        "properties": {"image": {"type": "string", "format": "binary"}},
        "required": ["image"],
    }
    png = {"image/png": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "surrogate-faces",
            "version": version,
            "description": "Attribute-conditioned surrogate faces: no real face leaves the caller.",
        },
        "paths": {
            "/synthesize": {
                "post": {
                    "summary": "Render surrogates for attribute records, or for an uploaded attribute file",
                    "requestBody": {
                        "required": True,
                        "content": {
                            **_json(SynthesizeRequest),
                            "multipart/form-data": {"schema": upload_form},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "one PNG, JSON with base64 PNGs, or (upload) a zip of "
                            "PNGs and status.csv",
                            "content": {
                                **png,
                                **_json(SynthesizeResponse),
                                "application/zip": {"schema": {"type": "string", "format": "binary"}},
                            },
                        },
                        **ERRORS,
                    },
                }
            },
            "/extract": {
                "post": {
                    "summary": "Estimate attributes of aligned face crops (per-image status)",
                    "requestBody": {
                        "required": True,
                        "content": {**_json(ImageRequest), "multipart/form-data": {"schema": image_form}},
                    },
                    "responses": {
                        "200": {"description": "attributes per image", "content": _json(ExtractResponse)},
                        **ERRORS,
                    },
                }
            },
            "/anonymize": {
                "post": {
                    "summary": "One face image -> one surrogate with its attributes; the image is never kept",
                    "requestBody": {
                        "required": True,
                        "content": {**_json(AnonymizeRequest), "multipart/form-data": {"schema": image_form}},
                    },
                    "responses": {
                        "200": {
                            "description": "the surrogate and the attributes used",
                            "content": {**_json(AnonymizeResponse), **png},
                        },
                        **ERRORS,
                    },
                }
            },
            "/models": {
                "get": {
                    "summary": "Served models, versions and attribute specs",
                    "responses": {
                        "200": {
                            "description": "models",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": schemas},
    }
