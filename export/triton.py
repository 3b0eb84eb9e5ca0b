"""Write exported models into a Triton model repository and check it.

Torch-free on purpose: the repository is written, checked and served by tools that never train.

* ``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf (tritonclient ships it) and
  written with ``text_format``, then parsed back and compared with the ONNX graph's inputs/outputs,
  so a config Triton would refuse or one that disagrees with its model is never written.
* Versions: each export adds ``<name>/<version>/`` beside the old ones (never overwriting one: a
  running Triton may have it loaded). The folder is staged outside the repository and renamed into
  place, so a poller never sees half a version. ``version_policy`` defaults to ``all``: a surrogate is
  defined by (attributes, seed, model version), so pinned old versions must stay servable.
* ``write_python_backend_repository`` derives a variant whose models use Triton's Python backend to
  run the same model.onnx through onnxruntime: that is what the ``tritonserver`` binary bundled in
  the ``nvidia-pytriton`` wheel can load (it has no onnxruntime backend), and what the tests serve
  (``tests/triton_harness.py`` starts that server).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.imageio import atomic_write_text
from surrogate.model_repo import (
    ATTRIBUTES_FILENAME,
    CONFIG_FILENAME,
    EXPORT_INFO_FILENAME,
    MODEL_CARD_FILENAME,
    MODEL_FILENAME,
    OPENVINO_FILENAME,
    OPENVINO_WEIGHTS_FILENAME,
    TRITON_TO_NUMPY,
    ModelRepository,
    ModelRepositoryError,
    TensorSpec,
    config_io,
    create_session,
    openvino_io,
    parse_config_text,
    session_io,
)
from surrogate.schema import AttributeSchema

NUMPY_TO_TRITON = {dtype: name for name, dtype in TRITON_TO_NUMPY.items()}
INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
PROJECT_LICENCE = "Apache-2.0"


class RepositoryWriteError(ModelRepositoryError):
    """A version that cannot be added (exists already, or disagrees with the model's config/schema)."""


# ---------------------------------------------------------------------------------------------------
# config.pbtxt
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServingOptions:
    """The serving knobs of config.pbtxt (see docs/export.md for how to choose them)."""

    max_batch_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = (16, 64)
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    instance_kind: str = "KIND_AUTO"
    version_policy: str = "all"            # "all" | "latest:N" | "specific:1,3"
    intra_op_threads: int = 0              # onnxruntime backend threads per instance (0 = its default)
    tensorrt: bool = False                 # onnxruntime's TensorRT execution accelerator (GPU only)
    tensorrt_fp16: bool = False
    tensorrt_workspace_bytes: int = 1 << 30
    openvino: bool = False                 # onnxruntime's OpenVINO CPU accelerator (bf16 on AVX512-BF16/AMX)

    def validate(self) -> ServingOptions:
        problems = []
        if self.max_batch_size < 1:
            problems.append(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            problems.append(f"preferred batch sizes {bad} must lie in [1, max_batch_size={self.max_batch_size}]")
        if self.max_queue_delay_us < 0:
            problems.append(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.instance_count < 1:
            problems.append(f"instance_count must be >= 1, got {self.instance_count}")
        if self.instance_kind not in INSTANCE_KINDS:
            problems.append(f"instance_kind must be one of {INSTANCE_KINDS}, got {self.instance_kind!r}")
        if self.openvino and self.instance_kind == "KIND_GPU":
            problems.append("the OpenVINO accelerator runs on CPU instances (instance_kind KIND_CPU or KIND_AUTO)")
        if self.tensorrt and self.instance_kind == "KIND_CPU":
            problems.append("the TensorRT accelerator needs GPU instances (instance_kind KIND_GPU or KIND_AUTO)")
        try:
            parse_version_policy(self.version_policy)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return self


def parse_version_policy(text: str) -> Any:
    """"all" | "latest:N" | "specific:1,2" -> Triton's ModelVersionPolicy message."""
    from tritonclient.grpc import model_config_pb2 as pb

    policy = pb.ModelVersionPolicy()
    kind, _, arg = text.partition(":")
    try:
        if kind == "all" and not arg:
            policy.all.SetInParent()
        elif kind == "latest":
            count = int(arg or 1)
            if count < 1:
                raise ValueError
            policy.latest.num_versions = count
        elif kind == "specific":
            versions = [int(v) for v in arg.split(",") if v.strip()]
            if not versions or min(versions) < 1:
                raise ValueError
            policy.specific.versions.extend(versions)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"version policy {text!r} must be 'all', 'latest:N' (N >= 1) or 'specific:V1,V2'") from None
    return policy


def build_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    options: ServingOptions,
    *,
    backend: str = "onnxruntime",
) -> Any:
    """A Triton ModelConfig for a model with a leading dynamic batch dimension on every tensor."""
    from tritonclient.grpc import model_config_pb2 as pb

    options.validate()
    config = pb.ModelConfig(name=name, max_batch_size=options.max_batch_size)
    if backend == "onnxruntime":
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = MODEL_FILENAME
    elif backend == "openvino":
        config.backend = "openvino"
        config.default_model_filename = OPENVINO_FILENAME
    elif backend == "python":
        config.backend = "python"
    else:
        raise ValueError(f"unknown backend {backend!r} (onnxruntime, openvino or python)")
    config.version_policy.CopyFrom(parse_version_policy(options.version_policy))
    for specs, target in ((inputs, config.input), (outputs, config.output)):
        for spec in specs:
            if not spec.shape or spec.shape[0] >= 0:
                raise ValueError(f"tensor {spec.name!r} has no dynamic batch dimension: shape {spec.shape}")
            if any(d < 0 for d in spec.shape[1:]):
                raise ValueError(f"tensor {spec.name!r} has a dynamic non-batch dimension: shape {spec.shape}")
            if spec.dtype not in NUMPY_TO_TRITON:
                raise ValueError(f"tensor {spec.name!r} has unsupported dtype {spec.dtype}")
            tensor = target.add(name=spec.name, data_type=pb.DataType.Value(NUMPY_TO_TRITON[spec.dtype]))
            tensor.dims.extend(spec.shape[1:])
    batching = config.dynamic_batching
    batching.preferred_batch_size.extend(sorted(set(options.preferred_batch_sizes)))
    batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.instance_group.add(count=options.instance_count,
                              kind=pb.ModelInstanceGroup.Kind.Value(options.instance_kind))
    if backend == "onnxruntime":
        if options.intra_op_threads:
            config.parameters["intra_op_thread_count"].string_value = str(options.intra_op_threads)
        if options.tensorrt:
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            accelerator.parameters["precision_mode"] = "FP16" if options.tensorrt_fp16 else "FP32"
            accelerator.parameters["max_workspace_size_bytes"] = str(options.tensorrt_workspace_bytes)
            accelerator.parameters["trt_engine_cache_enable"] = "1"
        if options.openvino:
            config.optimization.execution_accelerators.cpu_execution_accelerator.add(name="openvino")
    if backend == "openvino" and options.intra_op_threads:
        # the keys Triton's OpenVINO backend reads (its README, "Parameters")
        config.parameters["INFERENCE_NUM_THREADS"].string_value = str(options.intra_op_threads)
    return config


def config_to_text(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def compare_config_with_model(config: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[str]:
    """Differences between a config's declared tensors and an ONNX graph's (empty = consistent)."""
    declared_in, declared_out = config_io(config)
    problems = []
    for role, declared, actual in (("input", declared_in, inputs), ("output", declared_out, outputs)):
        by_name = {s.name: s for s in actual}
        for spec in declared:
            have = by_name.get(spec.name)
            if have is None:
                problems.append(f"{role} {spec.name!r} is in config.pbtxt but not in the model")
            elif have.dtype != spec.dtype:
                problems.append(f"{role} {spec.name!r}: config {spec.dtype.name}, model {have.dtype.name}")
            elif tuple(have.shape) != tuple(spec.shape):
                problems.append(f"{role} {spec.name!r}: config shape {spec.shape}, model {have.shape}")
        missing = sorted(set(by_name) - {s.name for s in declared})
        if missing and role == "input":
            problems.append(f"model input(s) {missing} are not declared in config.pbtxt")
    return problems


def check_repository(path: str | os.PathLike[str], *, run: bool = True) -> dict[str, list[str]]:
    """Check every model of a repository: config parses with Triton's protobuf, matches each version's
    ONNX graph, attributes.json and MODEL_CARD.md exist; with ``run``, each version answers a batch.

    Returns model name -> problems (empty lists mean the model is fine).
    """
    repository = ModelRepository(path)
    report: dict[str, list[str]] = {}
    for name in repository.model_names():
        problems: list[str] = report.setdefault(name, [])
        try:
            config = repository.config(name)
            if config.name and config.name != name:
                problems.append(f"config name {config.name!r} differs from the folder name")
            repository.schema(name)
            repository.model_card(name)
            versions = repository.versions(name)
            if not versions:
                problems.append("no version folder with model.onnx or model.xml"
                                + (" (an OpenVINO entry: `surrogate export photoreal` places its files)"
                                   if config.backend == "openvino" else ""))
            for version in versions:
                if repository.model_format(name, version) == "openvino":
                    problems += [f"v{version}: {p}" for p in _check_openvino(repository, name, version, config, run)]
                    continue
                model = repository.session(name, version)
                problems += [f"v{version}: {p}" for p in compare_config_with_model(config, model.inputs, model.outputs)]
                if run:
                    feed = {s.name: _zeros(s) for s in model.inputs}
                    model.run(feed)
        except (ModelRepositoryError, ValueError, OSError) as exc:
            problems.append(str(exc))
    return report


def _check_openvino(repository: ModelRepository, name: str, version: int, config: Any, run: bool) -> list[str]:
    """An OpenVINO IR version against its config (backend, I/O); with ``run``, it answers a batch of zeros."""
    try:
        import openvino as ov
    except ImportError:
        return ["OpenVINO IR, but openvino is not installed here to check it (the portraits extra)"]
    problems = [] if config.backend == "openvino" else [f"OpenVINO IR, but config backend is {config.backend!r}"]
    path = repository.model_path(name, version)
    if not path.with_name(OPENVINO_WEIGHTS_FILENAME).is_file():
        return [*problems, f"{path.with_name(OPENVINO_WEIGHTS_FILENAME)} is missing"]
    core = ov.Core()
    model = core.read_model(str(path))
    inputs, outputs = openvino_io(model)
    problems += compare_config_with_model(config, inputs, outputs)
    if run and not problems:
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        compiled.create_infer_request().infer({s.name: _zeros(s, batch=1) for s in inputs})
    return problems


def _zeros(spec: TensorSpec, batch: int = 2) -> np.ndarray:
    return np.zeros((batch, *spec.shape[1:]), dtype=spec.dtype)


# ---------------------------------------------------------------------------------------------------
# Adding a version
# ---------------------------------------------------------------------------------------------------
@dataclass
class ModelVersion:
    """Everything written for one new version of one model (built by the exporter)."""

    name: str
    model_bytes: bytes
    schema: AttributeSchema
    facts: dict[str, Any]                       # written into attributes.json (kind, sizes, ...)
    export_info: dict[str, Any]                 # written to <version>/export.json (parity, provenance)
    card: ModelCardInfo


@dataclass
class ModelCardInfo:
    """What the model card says beyond the I/O: where the model came from and how good it is."""

    kind: str                                   # "gan_generator" or "recon"
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    training_command: str = ""
    training_config: Mapping[str, Any] = field(default_factory=dict)
    data: str = ""
    steps: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    metrics_source: str = ""
    licence: str = PROJECT_LICENCE
    notes: str = ""


def next_version(model_dir: Path) -> int:
    if not model_dir.is_dir():
        return 1
    return max((int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), default=0) + 1


def add_version(
    repository: str | os.PathLike[str],
    version_data: ModelVersion,
    options: ServingOptions,
    *,
    version: int | None = None,
) -> Path:
    """Add ``version_data`` as a new version of its model; returns the version folder.

    Refuses (RepositoryWriteError) to overwrite a version, or to add a version whose I/O or attribute
    schema differs from the model's existing ones (Triton serves all versions under one config:
    export such a model under another name instead).
    """
    repo = Path(repository)
    repo.mkdir(parents=True, exist_ok=True)
    model_dir = repo / version_data.name
    version = int(version) if version is not None else next_version(model_dir)
    if version < 1:
        raise RepositoryWriteError(f"version must be a positive integer, got {version}")
    target = model_dir / str(version)
    if target.exists():
        raise RepositoryWriteError(f"{target} exists already; versions are never overwritten (omit --version "
                                   f"to add version {next_version(model_dir)})")

    session = create_session(version_data.model_bytes)
    inputs, outputs = session_io(session)
    config = build_config(version_data.name, inputs, outputs, options)
    text = config_to_text(config)
    parsed = parse_config_text(text, source=f"{model_dir / CONFIG_FILENAME} (generated)")
    problems = compare_config_with_model(parsed, inputs, outputs)
    if problems:  # pragma: no cover - would be a bug in build_config
        raise RepositoryWriteError(f"generated config disagrees with the model: {problems}")
    _check_compatible(model_dir, version_data.schema, parsed)

    card_info = version_data.card
    info = {**version_data.export_info, "version": version, "model_sha256": _sha256(version_data.model_bytes),
            "metrics": dict(card_info.metrics), "metrics_source": card_info.metrics_source,
            "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    staging = Path(tempfile.mkdtemp(prefix=f".{version_data.name}-v{version}-", dir=repo.parent))
    try:
        (staging / MODEL_FILENAME).write_bytes(version_data.model_bytes)
        (staging / EXPORT_INFO_FILENAME).write_text(json.dumps(info, indent=2, default=_json_default) + "\n")
        for path in staging.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        model_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(model_dir / CONFIG_FILENAME, text)
        metadata = {**version_data.schema.to_dict(), **version_data.facts}
        atomic_write_text(model_dir / ATTRIBUTES_FILENAME, json.dumps(metadata, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the version from a server running as another user
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    versions_info = _versions_info(model_dir)
    card = render_model_card(version_data.name, version_data.schema, version_data.facts, version_data.card,
                             parsed, inputs, outputs, versions_info, latest=version)
    atomic_write_text(model_dir / MODEL_CARD_FILENAME, card)
    return target


def _check_compatible(model_dir: Path, schema: AttributeSchema, config: Any) -> None:
    config_path = model_dir / CONFIG_FILENAME
    if config_path.is_file():
        existing = parse_config_text(config_path.read_text(encoding="utf-8"), source=str(config_path))
        old_in, old_out = config_io(existing)
        new_in, new_out = config_io(config)
        if (old_in, old_out) != (new_in, new_out):
            describe = lambda specs: ", ".join(s.describe() for s in specs)  # noqa: E731
            raise RepositoryWriteError(
                f"{model_dir.name}: the new version's I/O ({describe(new_in)} -> {describe(new_out)}) differs "
                f"from the existing config ({describe(old_in)} -> {describe(old_out)}); export it under another "
                f"--name"
            )
    attributes_path = model_dir / ATTRIBUTES_FILENAME
    if attributes_path.is_file():
        old_schema = AttributeSchema.from_json(attributes_path.read_text(encoding="utf-8"))
        if old_schema.attributes != schema.attributes:
            raise RepositoryWriteError(
                f"{model_dir.name}: the new version's attributes {list(schema.names)} (or their ranges) differ from "
                f"the existing versions' {list(old_schema.names)}; export it under another --name"
            )


def _versions_info(model_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for child in sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        info_path = child / EXPORT_INFO_FILENAME
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        rows.append({"version": int(child.name), **info})
    return rows


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


# ---------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------
INTENDED_USE = {
    "gan_generator": (
        "Synthesise *surrogate* faces that carry given low-level attributes (head pose, facial action "
        "unit intensities, perceived gender) and nothing else of any person, so that crowd workers can "
        "label the attributes' appearance instead of seeing a private face (Shirai & Whitehill).",
        [
            "Trained on the data named above only: attributes outside the training distribution "
            "(e.g. extreme poses, rare AU combinations) give less faithful faces; check the metrics.",
            "Attribute fidelity is measured by an independent estimator, not guaranteed per image: "
            "review samples before posting a batch.",
            "Perceived gender is a visual attribute in [0, 1]; it says nothing about a person's gender identity.",
            "Not for identification, verification, demographic inference, or creating likenesses of "
            "real people. Do not condition it on anything derived from a person's identity.",
            "Images are 8-bit; the noise z fixes the surrogate's look: same (attributes, seed, version) "
            "-> same image.",
        ],
    ),
    "recon": (
        "Estimate the attributes of an aligned face crop (head pose in degrees, action-unit "
        "intensities 0-5, P(male)) plus 3-D face-model identity and lighting coefficients, to "
        "condition surrogates (`surrogate attributes extract`).",
        [
            "Trained on the data named above; on real photographs, accuracy is only what the metrics "
            "below show for the data they were measured on. Validate on your own labelled sample.",
            "Expects an aligned, roughly frontal-framed face crop of the stated size; detection and "
            "alignment happen outside this model.",
            "Perceived gender is a visual estimate, not a statement about a person.",
            "The identity coefficients describe 3-D shape for rendering; they are not a face-recognition "
            "embedding and must not be used to identify anyone (surrogates never use them).",
        ],
    ),
}


def render_model_card(
    name: str,
    schema: AttributeSchema,
    facts: Mapping[str, Any],
    card: ModelCardInfo,
    config: Any,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    versions: Sequence[Mapping[str, Any]],
    *,
    latest: int,
) -> str:
    """MODEL_CARD.md: what the model does, its data, training, metrics, licence, use and limits."""
    purpose, limits = INTENDED_USE.get(card.kind, ("", []))
    policy = config_to_text(config.version_policy).replace("\n", " ").strip() or "latest { num_versions: 1 }"
    lines = [
        f"# Model card: `{name}` (version {latest})",
        "",
        f"Kind: **{card.kind}**. {purpose}",
        "",
        "## Inputs and outputs (Triton / onnxruntime)",
        "",
        "| tensor | role | dtype | shape |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{s.name}` | input | {s.dtype.name} | {_shape(s)} |" for s in inputs]
    lines += [f"| `{s.name}` | output | {s.dtype.name} | {_shape(s)} |" for s in outputs]
    lines += [
        "",
        "Pre- and post-processing are inside the graph: attributes are in natural units (normalised "
        "with the schema below inside the graph and clamped to the valid range); images are uint8.",
        "",
        "## Attributes (`attributes.json`)",
        "",
        "| name | unit | range | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a.name} | {a.unit} | [{a.low:g}, {a.high:g}] | {a.description} |" for a in schema.attributes]
    lines += ["", "Pose convention: pitch > 0 head down; yaw > 0 nose towards the image's left; roll > 0 top of "
              "the head towards the image's right (degrees)."]
    lines += ["", "## Training", ""]
    lines.append(f"- Data: {card.data or 'not recorded in the checkpoint'}")
    if card.steps is not None:
        lines.append(f"- Steps: {card.steps}")
    lines.append(f"- Checkpoint: `{card.checkpoint or 'n/a'}`" + (f" (sha256 `{card.checkpoint_sha256}`)"
                                                                   if card.checkpoint_sha256 else ""))
    with_config = " with the resolved configuration below" if card.training_config else ""
    lines.append(f"- Training command: `{card.training_command or 'not recorded'}`{with_config}")
    if card.training_config:
        lines += ["", "<details><summary>Resolved training configuration (from the checkpoint)</summary>", "",
                  "```json", json.dumps(card.training_config, indent=2, sort_keys=True, default=_json_default),
                  "```", "", "</details>"]
    lines += ["", "## Metrics", ""]
    measured = [v for v in reversed(versions) if v.get("metrics")]
    if not any(v.get("version") == latest for v in measured):
        lines += [f"No evaluation metrics were given when version {latest} was exported (pass `--metrics "
                  "FILE`); evaluate it (`surrogate evaluate ...`) before relying on it.", ""]
    for v in measured:
        source = f" (source: {v['metrics_source']})" if v.get("metrics_source") else ""
        lines += [f"Version {v['version']}{source}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(val)} |" for k, val in _flatten(v["metrics"]).items()]
        lines.append("")
    lines += ["", "## Versions", "",
              f"`version_policy {{ {policy} }}` (see docs/export.md). Export parity = max |ONNX - torch| in the "
              "network's own float units on random batches, before uint8 quantisation.", "",
              "| version | exported | precision | exporter | opset | parity (max err) | checkpoint sha256 |",
              "|---|---|---|---|---|---|---|"]
    for v in versions:
        parity = v.get("parity", {})
        lines.append(
            f"| {v.get('version')} | {v.get('exported_at', '?')} | {v.get('precision', '?')} "
            f"| {v.get('exporter', '?')} "
            f"| {v.get('opset', '?')} | {_fmt(parity.get('max_error', float('nan')))} "
            f"(tol {_fmt(parity.get('tolerance', float('nan')))}) | `{str(v.get('checkpoint_sha256', ''))[:16]}` |"
        )
    lines += ["", "## Intended use and limits", ""]
    lines += [f"- {item}" for item in limits]
    if card.notes:
        lines += ["", card.notes]
    lines += ["", "## Licence", "", f"{card.licence}. The weights were produced with surrogate-faces; they also "
              "carry whatever terms apply to their training data (named above).", ""]
    return "\n".join(lines)


def _shape(spec: TensorSpec) -> str:
    return "(" + ", ".join("N" if d < 0 else str(d) for d in spec.shape) + ")"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list | tuple) and len(value) > 8:
            flat[name] = f"[{len(value)} values]"
        else:
            flat[name] = value
    return flat


# ---------------------------------------------------------------------------------------------------
# Python-backend variant
# ---------------------------------------------------------------------------------------------------
PYTHON_MODEL_FILE = Path(__file__).with_name("triton_python_model.py")
PYTHON_MODEL_SETTINGS = "model_settings.json"
# The batch the Python-backend OpenVINO model compiles and pads to: the embedded photoreal backend's, so that
# the two give the same pixels (OpenVINO's rounding may move a pixel by one level with the batch size).
OPENVINO_PYTHON_BATCH = 4


def write_python_backend_repository(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    extra_sys_path: Sequence[str] = (),
    intra_op_threads: int = 1,
    instance_count: int = 1,
    openvino_batch: int = OPENVINO_PYTHON_BATCH,
) -> Path:
    """Copy ``source`` to ``destination`` with every model switched to Triton's Python backend.

    Each version folder gets the same model files (hard-linked where possible), ``model.py`` (a copy of
    ``export/triton_python_model.py``: model.onnx through onnxruntime, OpenVINO IR (model.xml + model.bin)
    through OpenVINO, compiled at ``openvino_batch`` and padded to it) and its ``model_settings.json``;
    config.pbtxt keeps the I/O, batching and version policy but uses ``backend: "python"`` and CPU instances.
    ``extra_sys_path`` is prepended to sys.path by model.py (the Triton venv's site-packages: the stub's
    interpreter does not know it). An entry with no
    version folder (an OpenVINO entry whose files were not placed yet) is left out: Triton could not load it.
    """
    from tritonclient.grpc import model_config_pb2 as pb

    repository = ModelRepository(source)
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise RepositoryWriteError(f"{destination} exists and is not empty")
    destination.mkdir(parents=True, exist_ok=True)
    for name in repository.model_names():
        if not repository.versions(name):
            continue
        config = repository.config(name)
        config.ClearField("platform")
        config.ClearField("default_model_filename")
        config.ClearField("optimization")
        config.ClearField("parameters")
        config.backend = "python"
        del config.instance_group[:]
        config.instance_group.add(count=instance_count, kind=pb.ModelInstanceGroup.Kind.KIND_CPU)
        model_dir = destination / name
        model_dir.mkdir()
        atomic_write_text(model_dir / CONFIG_FILENAME, config_to_text(config))
        for extra in (ATTRIBUTES_FILENAME, MODEL_CARD_FILENAME):
            if (repository.path / name / extra).is_file():
                shutil.copy2(repository.path / name / extra, model_dir / extra)
        for version in repository.versions(name):
            version_dir = model_dir / str(version)
            version_dir.mkdir()
            source_model = repository.model_path(name, version)
            settings: dict[str, Any] = {"model_file": source_model.name, "extra_sys_path": list(extra_sys_path),
                                        "intra_op_threads": int(intra_op_threads)}
            files = [source_model]
            if repository.model_format(name, version) == "openvino":
                files.append(source_model.with_name(OPENVINO_WEIGHTS_FILENAME))
                settings["batch"] = int(openvino_batch)
            for file in files:
                try:
                    os.link(file, version_dir / file.name)
                except OSError:
                    shutil.copy2(file, version_dir / file.name)
            shutil.copy2(PYTHON_MODEL_FILE, version_dir / "model.py")
            atomic_write_text(version_dir / PYTHON_MODEL_SETTINGS, json.dumps(settings, indent=2) + "\n")
    return destination
