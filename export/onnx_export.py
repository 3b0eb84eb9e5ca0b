"""Export the generator and the reconstruction network to ONNX, with pre/post-processing in the graph.

Why the processing lives inside the graph: any Triton (or onnxruntime) caller then gets the final
product. The generator graph takes attributes in natural units (degrees, AU intensity, P(male)) and
the noise z, normalises with the model's own schema, and returns uint8 pixels; the reconstruction
graph takes uint8 pixels and returns attributes in natural units. No caller can forget a scaling.

Why parity is checked here and a failing model is never written: an exported graph that silently
differs from the trained network would produce surrogates with other attributes than asked for. The
exported graph carries extra float outputs (the image before quantisation to uint8, the normalised
attributes); the check runs the graph with them, then they are removed from the graph's output list
(the nodes are shared with the deployed outputs, so the deployed graph is the checked one).

Parity metric (per output): max |onnx - torch| / scale, where the scale puts the error in the
network's own units: 127.5 for pixels (BEGAN scaling x/127.5 - 1), the schema span for attributes
(normalised [0, 1] units), and max(1, max |torch value|) per column for the other outputs.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from surrogate.model_repo import TensorSpec, available_providers, create_session, session_io
from surrogate.noise import Z_DIM
from surrogate.schema import AttributeSchema

GAN_MODEL_NAME = "gan_generator"
RECON_MODEL_NAME = "recon"
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2
DEFAULT_PARITY_BATCHES: tuple[int, ...] = (1, 3, 17)
LIGHTING_NAMES: tuple[str, ...] = ("light_azimuth", "light_elevation", "light_strength", "ambient")
EXPORTERS = ("dynamo", "legacy")
LEGACY_OPSET = 17
PIXEL_SCALE = 127.5
TENSORRT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ExportError(RuntimeError):
    """The export cannot produce a correct model (parity failed, bad network, bad options)."""


class ParityError(ExportError):
    """The ONNX graph differs from the torch network by more than the tolerance."""

    def __init__(self, report: ParityReport) -> None:
        self.report = report
        super().__init__(f"parity check failed, nothing written: {report.summary()}")


# ---------------------------------------------------------------------------------------------------
# Graphs with pre/post-processing
# ---------------------------------------------------------------------------------------------------
class GeneratorGraph(nn.Module):
    """(attributes natural units, z) -> (image uint8, image_float).

    ``image_float`` = clamp((G(z, y) + 1) * 127.5, 0, 255) before rounding: the parity output, removed
    from the deployed graph. Attributes are normalised with the schema and clamped to [0, 1], exactly
    as in training, so an out-of-range request cannot push the generator off its training manifold.
    """

    def __init__(self, generator: nn.Module, schema: AttributeSchema,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.generator = generator
        self.compute_dtype = compute_dtype
        self.register_buffer("low", torch.from_numpy(schema.lows))
        self.register_buffer("span", torch.from_numpy(schema.highs - schema.lows))

    def forward(self, attributes: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normalised = ((attributes - self.low) / self.span).clamp(0.0, 1.0)
        dtype = self.compute_dtype
        began = self.generator(z.to(dtype), normalised.to(dtype)).to(torch.float32)
        pixels = ((began + 1.0) * PIXEL_SCALE).clamp(0.0, 255.0)
        return torch.round(pixels).to(torch.uint8), pixels


class ReconGraph(nn.Module):
    """image uint8 (N, C, S, S) -> (attributes natural units, identity, lighting, attributes_normalised).

    The normalised attributes are clamped to [0, 1] before denormalising, so every estimate is inside
    the schema's valid range (the adapters and the synthesiser reject out-of-range values).
    """

    def __init__(self, net: nn.Module, schema: AttributeSchema, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.net = net
        self.compute_dtype = compute_dtype
        self.register_buffer("low", torch.from_numpy(schema.lows))
        self.register_buffer("span", torch.from_numpy(schema.highs - schema.lows))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = image.to(torch.float32) / PIXEL_SCALE - 1.0
        out = {k: v.to(torch.float32) for k, v in self.net(x.to(self.compute_dtype)).items()}
        normalised = out["attributes"].clamp(0.0, 1.0)
        return normalised * self.span + self.low, out["identity"], out["lighting"], normalised


@dataclass(frozen=True)
class GraphSpec:
    """What one exportable graph looks like: its I/O names and how to test it."""

    kind: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]          # deployed outputs (the contract)
    parity_outputs: tuple[str, ...]        # extra float outputs used only by the parity check
    make_inputs: Callable[[int, np.random.Generator], dict[str, np.ndarray]]
    scales: dict[str, np.ndarray | float]  # per checked output; missing = max(1, |ref|) per column
    checked: tuple[str, ...]               # outputs compared in float terms
    quantised: dict[str, str] = field(default_factory=dict)  # uint8 output -> its float twin

    @property
    def all_outputs(self) -> tuple[str, ...]:
        return self.output_names + self.parity_outputs


def generator_spec(schema: AttributeSchema, z_dim: int = Z_DIM) -> GraphSpec:
    lows, highs = schema.lows, schema.highs

    def make_inputs(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {
            "attributes": rng.uniform(lows, highs, size=(n, len(schema))).astype(np.float32),
            "z": rng.uniform(-1.0, 1.0, size=(n, z_dim)).astype(np.float32),
        }

    return GraphSpec(
        kind=GAN_MODEL_NAME,
        input_names=("attributes", "z"),
        output_names=("image",),
        parity_outputs=("image_float",),
        make_inputs=make_inputs,
        scales={"image_float": PIXEL_SCALE},
        checked=("image_float",),
        quantised={"image": "image_float"},
    )


def recon_spec(schema: AttributeSchema, image_size: int, channels: int) -> GraphSpec:
    def make_inputs(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        # Smooth random images (low-resolution noise, upsampled) look more like faces to a conv net
        # than white noise does, and still cover the whole uint8 range.
        coarse = rng.uniform(0, 255, size=(n, channels, 8, 8))
        reps = max(1, image_size // 8)
        image = np.kron(coarse, np.ones((1, 1, reps, reps)))[..., :image_size, :image_size]
        image = image + rng.normal(0, 8, size=image.shape)
        return {"image": np.clip(np.rint(image), 0, 255).astype(np.uint8)}

    span = (schema.highs - schema.lows).astype(np.float32)
    return GraphSpec(
        kind=RECON_MODEL_NAME,
        input_names=("image",),
        output_names=("attributes", "identity", "lighting"),
        parity_outputs=("attributes_normalised",),
        make_inputs=make_inputs,
        scales={"attributes": span, "attributes_normalised": 1.0},
        checked=("attributes", "identity", "lighting", "attributes_normalised"),
    )


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------
def export_to_onnx(
    module: nn.Module,
    spec: GraphSpec,
    *,
    exporter: str = "dynamo",
    seed: int = 0,
) -> onnx.ModelProto:
    """Trace ``module`` (in eval mode) to ONNX with a dynamic batch dimension on every input/output."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {EXPORTERS}")
    module = module.eval()
    example = spec.make_inputs(2, np.random.default_rng(seed))
    args = tuple(torch.from_numpy(example[name]) for name in spec.input_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation chatter; errors still raise
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=65536)
            program = torch.onnx.export(
                module, args, dynamo=True, verbose=False, optimize=True,
                input_names=list(spec.input_names), output_names=list(spec.all_outputs),
                dynamic_shapes={name: {0: batch} for name in spec.input_names},
            )
            if program is None:
                raise ExportError("torch.onnx.export returned no program")
            model = program.model_proto
        else:
            buffer = io.BytesIO()
            axes = {name: {0: "batch"} for name in (*spec.input_names, *spec.all_outputs)}
            torch.onnx.export(
                module, args, buffer, dynamo=False, opset_version=LEGACY_OPSET,
                input_names=list(spec.input_names), output_names=list(spec.all_outputs), dynamic_axes=axes,
            )
            model = onnx.load_from_string(buffer.getvalue())
            # Fold constants and drop no-op casts, as the dynamo path does (optimize=True).
            import onnxscript

            model = onnxscript.optimizer.optimize(model)
    _name_batch_dimension(model)
    onnx.checker.check_model(model)
    return model


def _name_batch_dimension(model: onnx.ModelProto) -> None:
    """Call the leading dimension of every graph input/output "batch" (the legacy exporter and
    constant folding sometimes leave other symbolic names, which confuses readers of the graph)."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def keep_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are only ``names`` (in that order)."""
    kept = onnx.ModelProto()
    kept.CopyFrom(model)
    by_name = {o.name: o for o in model.graph.output}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ExportError(f"graph has no output(s) {missing}; outputs: {list(by_name)}")
    del kept.graph.output[:]
    kept.graph.output.extend(by_name[n] for n in names)
    onnx.checker.check_model(kept)
    return kept


def strip_source_traces(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug metadata (stack traces with this machine's file paths).

    Nothing at run time reads it; keeping it would put build-machine paths into every shipped model and
    make the same checkpoint export to different bytes on different checkouts.
    """
    def clean(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    clean(attribute.g)
                for subgraph in attribute.graphs:
                    clean(subgraph)

    clean(model.graph)
    for function in model.functions:
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Record provenance in the ONNX file itself (no timestamps: re-export must be byte-identical)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)


# ---------------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------------
@dataclass
class ParityReport:
    """Measured ONNX-vs-torch differences; ``passed`` says whether every one is within tolerance."""

    precision: str
    tolerance: float
    batch_sizes: tuple[int, ...]
    providers: tuple[str, ...]
    errors: dict[str, float] = field(default_factory=dict)          # output -> max scaled abs diff
    uint8_max_level_diff: dict[str, int] = field(default_factory=dict)
    uint8_mismatch_fraction: dict[str, float] = field(default_factory=dict)
    deployed_matches_checked: bool = True

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def max_level_allowed(self) -> int:
        # A float error of e levels moves a rounded pixel by at most floor(e) + 1 levels.
        return int(np.floor(self.tolerance * PIXEL_SCALE)) + 1

    @property
    def passed(self) -> bool:
        return (
            all(np.isfinite(e) and e <= self.tolerance for e in self.errors.values())
            and all(d <= self.max_level_allowed for d in self.uint8_max_level_diff.values())
            and self.deployed_matches_checked
        )

    def summary(self) -> str:
        errs = ", ".join(f"{k} {v:.2e}" for k, v in self.errors.items())
        levels = ", ".join(f"{k} <= {v} level(s) on {self.uint8_mismatch_fraction[k]:.2%} of pixels"
                           for k, v in self.uint8_max_level_diff.items())
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict} {self.precision} (tolerance {self.tolerance:g}, batches {list(self.batch_sizes)}, "
                f"{', '.join(self.providers)}): max scaled error {errs}" + (f"; uint8 {levels}" if levels else ""))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(passed=self.passed, max_error=self.max_error)
        return data


def measure_parity(
    module: nn.Module,
    model: onnx.ModelProto,
    deployed: onnx.ModelProto,
    spec: GraphSpec,
    *,
    precision: str,
    batch_sizes: Sequence[int] = DEFAULT_PARITY_BATCHES,
    seed: int = 0,
    providers: Sequence[str] | None = None,
) -> ParityReport:
    """Compare ``model`` (all outputs) with torch on random batches; check ``deployed`` equals it."""
    tolerance = FP16_TOLERANCE if precision == "fp16" else FP32_TOLERANCE
    session = create_session(model.SerializeToString(), providers=providers)
    deployed_session = create_session(deployed.SerializeToString(), providers=providers)
    report = ParityReport(precision, tolerance, tuple(batch_sizes), tuple(session.get_providers()))
    rng = np.random.default_rng(seed)
    mismatched: dict[str, list[int]] = {}
    module = module.eval()
    for n in batch_sizes:
        inputs = spec.make_inputs(n, rng)
        with torch.no_grad():
            reference = module(*(torch.from_numpy(inputs[k]) for k in spec.input_names))
        expected = {name: t.numpy() for name, t in zip(spec.all_outputs, reference, strict=True)}
        got = dict(zip(spec.all_outputs, session.run(list(spec.all_outputs), inputs), strict=True))
        for name in spec.checked:
            want, have = expected[name].astype(np.float64), got[name].astype(np.float64)
            if have.shape != want.shape:
                raise ExportError(f"output {name!r}: ONNX shape {have.shape} != torch shape {want.shape} (batch {n})")
            scale = spec.scales.get(name)
            if scale is None:  # per column: relative above 1, absolute below
                flat = np.abs(want.reshape(n, -1))
                scale = np.maximum(1.0, flat.max(axis=0)).reshape(want.shape[1:])
            error = float(np.max(np.abs(have - want) / scale)) if want.size else 0.0
            if not np.isfinite(have).all():
                error = float("inf")
            report.errors[name] = max(report.errors.get(name, 0.0), error)
        for name in spec.quantised:
            diff = np.abs(got[name].astype(np.int32) - expected[name].astype(np.int32))
            report.uint8_max_level_diff[name] = max(report.uint8_max_level_diff.get(name, 0), int(diff.max()))
            counts = mismatched.setdefault(name, [0, 0])
            counts[0] += int((diff > 0).sum())
            counts[1] += diff.size
        deployed_out = deployed_session.run(list(spec.output_names), inputs)
        for name, value in zip(spec.output_names, deployed_out, strict=True):
            if not np.array_equal(value, got[name]):
                report.deployed_matches_checked = False
    for name, (bad, total) in mismatched.items():
        report.uint8_mismatch_fraction[name] = bad / max(total, 1)
    return report


# ---------------------------------------------------------------------------------------------------
# The whole export
# ---------------------------------------------------------------------------------------------------
@dataclass
class ExportedModel:
    """A parity-checked ONNX model ready to be written into a repository."""

    kind: str
    model: onnx.ModelProto
    parity: ParityReport
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: str
    exporter: str
    schema: AttributeSchema
    facts: dict[str, Any]       # image size, channels, z_dim, ... (written to attributes.json)
    tensorrt_parity: ParityReport | None = None  # set when TensorRT was asked for and is available

    @property
    def opset(self) -> int:
        return max((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), default=0)

    def to_bytes(self) -> bytes:
        return self.model.SerializeToString()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def _export(
    reference: nn.Module,
    exported: nn.Module,
    spec: GraphSpec,
    schema: AttributeSchema,
    facts: dict[str, Any],
    *,
    precision: str,
    exporter: str,
    batch_sizes: Sequence[int],
    providers: Sequence[str] | None,
    seed: int,
    require_parity: bool,
    tensorrt: bool,
) -> ExportedModel:
    """Export ``exported`` and check it against ``reference`` (the float32 torch graph)."""
    full = export_to_onnx(exported, spec, exporter=exporter, seed=seed)
    strip_source_traces(full)
    set_metadata(full, {
        "surrogate.kind": spec.kind,
        "surrogate.precision": precision,
        "surrogate.exporter": exporter,
        "surrogate.schema": schema.to_json(indent=0),
        "surrogate.facts": json.dumps(facts, sort_keys=True),
    })
    deployed = keep_outputs(full, spec.output_names)
    report = measure_parity(reference, full, deployed, spec, precision=precision, batch_sizes=batch_sizes,
                            providers=providers, seed=seed + 1)
    if require_parity and not report.passed:
        raise ParityError(report)
    tensorrt_report = None
    if tensorrt and TENSORRT_PROVIDERS[0] in available_providers():
        tensorrt_report = measure_parity(reference, full, deployed, spec, precision=precision,
                                         batch_sizes=batch_sizes, providers=TENSORRT_PROVIDERS, seed=seed + 2)
        if require_parity and not tensorrt_report.passed:
            raise ParityError(tensorrt_report)
    session = create_session(deployed.SerializeToString())
    inputs, outputs = session_io(session)
    return ExportedModel(spec.kind, deployed, report, inputs, outputs, precision, exporter, schema, facts,
                         tensorrt_report)


def _half_copy(net: nn.Module) -> nn.Module:
    """A float16 copy of a network (the caller's float32 one stays the parity reference).

    Reduced precision is done in torch rather than by converting the ONNX graph afterwards: the
    pre/post-processing (uint8 casts, normalisation, rounding) then stays float32 by construction,
    and only the network body runs in float16.
    """
    return copy.deepcopy(net).half().eval()


def export_generator(
    generator: nn.Module,
    schema: AttributeSchema,
    *,
    fp16: bool = False,
    exporter: str = "dynamo",
    batch_sizes: Sequence[int] = DEFAULT_PARITY_BATCHES,
    providers: Sequence[str] | None = None,
    seed: int = 0,
    require_parity: bool = True,
    tensorrt: bool = False,
) -> ExportedModel:
    """Generator (contract 4: forward(z, y normalised) -> BEGAN-scaled image) -> parity-checked ONNX."""
    z_dim, image_size, channels = _generator_shape(generator, schema)
    precision = "fp16" if fp16 else "fp32"
    facts = {"model": GAN_MODEL_NAME, "z_dim": z_dim, "image_size": image_size, "channels": channels,
             "precision": precision, "input_units": "natural (see attributes)", "output": "uint8 (N, C, H, W)"}
    reference = GeneratorGraph(generator, schema).eval()
    exported = GeneratorGraph(_half_copy(generator), schema, torch.float16).eval() if fp16 else reference
    return _export(reference, exported, generator_spec(schema, z_dim), schema, facts, precision=precision,
                   exporter=exporter, batch_sizes=batch_sizes, providers=providers, seed=seed,
                   require_parity=require_parity, tensorrt=tensorrt)


def export_reconnet(
    net: nn.Module,
    schema: AttributeSchema,
    *,
    image_size: int,
    channels: int,
    fp16: bool = False,
    exporter: str = "dynamo",
    batch_sizes: Sequence[int] = DEFAULT_PARITY_BATCHES,
    providers: Sequence[str] | None = None,
    seed: int = 0,
    require_parity: bool = True,
    tensorrt: bool = False,
) -> ExportedModel:
    """Reconstruction network (contract 5: [-1, 1] image -> dict of outputs) -> parity-checked ONNX."""
    probe = torch.zeros(1, channels, image_size, image_size)
    with torch.no_grad():
        try:
            raw = net.eval()(probe)
            attributes, identity, lighting = raw["attributes"], raw["identity"], raw["lighting"]
        except (KeyError, RuntimeError, TypeError) as exc:
            raise ExportError(f"the reconstruction network does not take a {channels}x{image_size}x"
                              f"{image_size} image or lacks an output ({exc})") from exc
    if attributes.shape[-1] != len(schema):
        raise ExportError(f"the network predicts {attributes.shape[-1]} attributes but the schema has "
                          f"{len(schema)}")
    if lighting.shape[-1] != len(LIGHTING_NAMES):
        raise ExportError(f"lighting output has {lighting.shape[-1]} values, expected {len(LIGHTING_NAMES)}")
    reference = ReconGraph(net, schema).eval()
    precision = "fp16" if fp16 else "fp32"
    facts = {"model": RECON_MODEL_NAME, "image_size": image_size, "channels": channels,
             "n_identity": int(identity.shape[-1]), "lighting": list(LIGHTING_NAMES), "precision": precision,
             "input": "uint8 (N, C, S, S) aligned face crop", "output_units": "natural (see attributes)"}
    exported = ReconGraph(_half_copy(net), schema, torch.float16).eval() if fp16 else reference
    return _export(reference, exported, recon_spec(schema, image_size, channels), schema, facts,
                   precision=precision, exporter=exporter, batch_sizes=batch_sizes, providers=providers,
                   seed=seed, require_parity=require_parity, tensorrt=tensorrt)


def _generator_shape(generator: nn.Module, schema: AttributeSchema) -> tuple[int, int, int]:
    """z_dim, image size and channels, from the generator's config or, failing that, a probe run."""
    cfg = getattr(generator, "cfg", None)
    z_dim = int(getattr(cfg, "z_dim", Z_DIM))
    if z_dim != Z_DIM:
        raise ExportError(f"the generator takes z of size {z_dim}, but the serving contract (and "
                          f"surrogate.noise) uses {Z_DIM}")
    with torch.no_grad():
        out = generator.eval()(torch.zeros(1, z_dim), torch.zeros(1, len(schema)))
    if out.ndim != 4 or out.shape[2] != out.shape[3]:
        raise ExportError(f"the generator returned shape {tuple(out.shape)}, expected (N, C, H, H)")
    return z_dim, int(out.shape[2]), int(out.shape[1])
