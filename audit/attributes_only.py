"""The attributes-only guarantee, checked structurally: no code path hands image pixels to synthesis.

Two checks, both cheap enough for every audit run:

* ``signature_findings``: the synthesis entry points take attributes, seeds and model settings only;
  a parameter named like an image, a source identity or a reconstruction would be a finding.
* ``trace_anonymize``: runs the service's real ``/anonymize`` handler in-process (Starlette test client,
  the embedded onnxruntime backend) and records every call that crosses into synthesis (the
  ``render`` step and the generator). It then checks that the only data that crossed are the
  attribute row the reconstruction network returned (clipped to the schema) and the seed's noise.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Parameters a synthesis entry point may have: what to render (attributes), how (method, model,
# size) and with which randomness (seeds). Anything else must be justified here first.
ALLOWED_PARAMETERS = frozenset(
    {
        "method",
        "model",  # which 3-D face model draws (render_surrogates_3d): parametric or ict
        "values",
        "seeds",
        "seed",
        "schema",
        "repository",
        "size",
        "rgb",
        "batch_size",
        "row",
        "attributes",
        "z",
        "rows",
        "params_list",
        "backgrounds",
        "params",
        "background",
        "backend",
    }
)
SUSPICIOUS = ("image", "pixel", "photo", "crop", "source", "identity", "face", "recon", "lighting")


def synthesis_entry_points() -> dict[str, Callable[..., Any]]:
    """The functions that turn attributes + seeds into surrogate pixels (torch-free)."""
    from surrogate import photoreal, runtime, synthesis, synthesis_3d

    return {
        "surrogate.synthesis.synthesize": synthesis.synthesize,
        "surrogate.photoreal.PhotorealBackend.generate": photoreal.PhotorealBackend.generate,
        "surrogate.photoreal.PhotorealBackend.latents": photoreal.PhotorealBackend.latents,
        "surrogate.runtime.generate_images": runtime.generate_images,
        "surrogate.synthesis_3d.render_surrogates_3d": synthesis_3d.render_surrogates_3d,
        "surrogate.synthesis_3d.surrogate_params": synthesis_3d.surrogate_params,
    }


def signature_findings(functions: dict[str, Callable[..., Any]] | None = None) -> list[str]:
    """Parameters that could carry a source image or identity into synthesis ([] = none)."""
    findings = []
    for name, function in (functions or synthesis_entry_points()).items():
        for parameter in inspect.signature(function).parameters:
            if parameter == "self":  # a backend's own state: its model files, not a request's
                continue
            lowered = parameter.lower()
            if parameter not in ALLOWED_PARAMETERS or any(word in lowered for word in SUSPICIOUS):
                findings.append(f"{name}({parameter}): not an attribute/seed/model parameter")
    return findings


@dataclass
class AnonymizeTrace:
    """What crossed into synthesis during one /anonymize call."""

    method: str
    seed: int
    reconstructed: list[np.ndarray] = field(default_factory=list)  # recon outputs (attributes)
    render_calls: list[tuple[str, np.ndarray, list[int]]] = field(default_factory=list)
    generate_calls: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    status: int = 0
    findings: list[str] = field(default_factory=list)


def trace_anonymize(
    repository: str | os.PathLike[str], image_png: bytes, *, method: str = "gan", seed: int = 0
) -> AnonymizeTrace:
    """Call /anonymize in-process and check that only (clipped recon attributes, seed) reach synthesis."""
    from starlette.testclient import TestClient

    from service.config import ServiceConfig
    from service.http_app import LocalEngine, SurrogateAPI
    from surrogate.runtime import OnnxRuntimeBackend, generator_noise
    from surrogate.synthesis import reorder

    trace = AnonymizeTrace(method, seed)
    config = ServiceConfig(model_repository=str(repository))
    backend = OnnxRuntimeBackend(repository, intra_op_threads=1)

    class RecordingEngine(LocalEngine):
        async def reconstruct(self, images: np.ndarray) -> np.ndarray:
            values = await super().reconstruct(images)
            trace.reconstructed.append(np.array(values))
            return values

        async def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
            trace.generate_calls.append((np.array(attributes), np.array(z)))
            return await super().generate(attributes, z)

    class RecordingAPI(SurrogateAPI):
        async def render(self, method: str, schema: Any, values: np.ndarray, seeds: list[int],
                         size: int | None = None, rgb: bool = False) -> np.ndarray:
            trace.render_calls.append((method, np.array(values), list(seeds)))
            return await super().render(method, schema, values, seeds, size, rgb)

    engine = RecordingEngine(backend)
    api = RecordingAPI(lambda: engine, config)
    with TestClient(api.app()) as client:
        response = client.post(
            # aligned: the probe is a crop, not a photo; face detection (a 422 for noise) is not what is traced
            "/anonymize", files={"image": ("face.png", image_png)},
            data={"seed": str(seed), "method": method, "aligned": "true"},
        )
    trace.status = response.status_code
    if response.status_code != 200:
        trace.findings.append(f"/anonymize answered {response.status_code}: {response.text[:200]}")
        return trace
    if len(trace.reconstructed) != 1 or len(trace.render_calls) != 1:
        trace.findings.append(
            f"expected one reconstruction and one render call, got "
            f"{len(trace.reconstructed)} and {len(trace.render_calls)}"
        )
        return trace
    _, values, seeds = trace.render_calls[0]
    recon_schema = backend.recon.schema if backend.recon else None
    target = backend.gan.schema if method == "gan" and backend.gan else None
    if target is None:
        from surrogate.schema import DEFAULT_SCHEMA

        target = DEFAULT_SCHEMA
    expected = target.clip(reorder(trace.reconstructed[0], recon_schema, target)) if recon_schema else None
    if seeds != [seed]:
        trace.findings.append(f"render got seeds {seeds}, expected [{seed}]")
    if values.shape != (1, len(target)):
        trace.findings.append(f"render got an array of shape {values.shape}, not one attribute row")
    elif expected is not None and not np.array_equal(values, expected):
        trace.findings.append("render got values that differ from the reconstructed attributes")
    for attributes, z in trace.generate_calls:
        if not np.array_equal(attributes, values) or not np.array_equal(z, generator_noise([seed], backend.gan)):
            trace.findings.append("the generator got something other than the attribute row and the seed's noise")
    if method == "gan" and not trace.generate_calls:
        trace.findings.append("method gan rendered without calling the generator")
    return trace
