"""Read a Triton model repository and run its ONNX models with onnxruntime, without torch.

The exported repository (``surrogate export``) is the one hand-off between training and serving: the
HTTP service, batch synthesis and the Triton server all load the same ``model.onnx`` files, so an
image depends only on (attributes, seed, model name, model version). Layout (Triton's standard one)::

    REPO/<name>/config.pbtxt          Triton model config (text protobuf, Triton's own schema)
    REPO/<name>/attributes.json       the attribute schema the model was trained on (+ model facts)
    REPO/<name>/MODEL_CARD.md         data, training, metrics, licence, intended use and limits
    REPO/<name>/<version>/model.onnx  one folder per version (positive integer); newest = highest
    REPO/<name>/<version>/export.json parity figures and provenance of that version

An entry may instead hold OpenVINO IR (``<version>/model.xml`` + ``model.bin``, ``backend: "openvino"``:
the photoreal method's synthesis network, ``surrogate export photoreal``). It is listed and described
like the others; onnxruntime never opens it (``session`` says so), Triton's OpenVINO backend serves it.

Configs are parsed with Triton's own ``ModelConfig`` protobuf (shipped by tritonclient), so a config
this module accepts is one that Triton's parser accepts too.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from surrogate.schema import AttributeSchema

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnxruntime
    from tritonclient.grpc import model_config_pb2

MODEL_FILENAME = "model.onnx"
OPENVINO_FILENAME = "model.xml"  # OpenVINO IR, its weights beside it in model.bin
OPENVINO_WEIGHTS_FILENAME = "model.bin"
MODEL_FILENAMES = (MODEL_FILENAME, OPENVINO_FILENAME)  # what makes a folder a version, by format
CONFIG_FILENAME = "config.pbtxt"
ATTRIBUTES_FILENAME = "attributes.json"
MODEL_CARD_FILENAME = "MODEL_CARD.md"
EXPORT_INFO_FILENAME = "export.json"

# Triton data types <-> numpy, for the types our models use (and the common others).
TRITON_TO_NUMPY: dict[str, np.dtype] = {
    "TYPE_BOOL": np.dtype(np.bool_),
    "TYPE_UINT8": np.dtype(np.uint8),
    "TYPE_INT8": np.dtype(np.int8),
    "TYPE_INT32": np.dtype(np.int32),
    "TYPE_INT64": np.dtype(np.int64),
    "TYPE_FP16": np.dtype(np.float16),
    "TYPE_FP32": np.dtype(np.float32),
    "TYPE_FP64": np.dtype(np.float64),
}
# onnxruntime's type strings ("tensor(float)") -> numpy
ORT_TO_NUMPY: dict[str, np.dtype] = {
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
}


class ModelRepositoryError(ValueError):
    """A repository, model, version or input that cannot be used; the message names which."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy dtype and shape (-1 for a dynamic dimension)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def describe(self) -> str:
        dims = ", ".join("N" if i == 0 and d < 0 else ("?" if d < 0 else str(d)) for i, d in enumerate(self.shape))
        return f"{self.name}: {self.dtype.name}[{dims}]"


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(device: str = "cpu") -> list[str]:
    """Execution providers for a device: "cpu"; "cuda" (CUDA, CPU fallback for unsupported nodes; an
    error if this onnxruntime has no CUDA); "auto" (CUDA when available, else CPU)."""
    available = available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("cuda", "auto"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "auto":
            return ["CPUExecutionProvider"]
        raise ModelRepositoryError(f"device 'cuda': this onnxruntime has no CUDAExecutionProvider "
                                   f"(available: {available}); install onnxruntime-gpu with CUDA 13 / cuDNN 9")
    raise ModelRepositoryError(f"unknown device {device!r}; expected cpu, cuda or auto")


def create_session(
    model: str | os.PathLike[str] | bytes,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
) -> onnxruntime.InferenceSession:
    """The one way this project opens an onnxruntime session.

    Providers are always explicit (onnxruntime 1.32 also lists an Azure provider, and onnxruntime-gpu
    silently falls back to CPU when CUDA is missing), graph optimisation is ORT_ENABLE_ALL, and
    ``intra_op_threads`` defaults to onnxruntime's choice (all physical cores); set it when several
    workers share a machine. A requested provider that this onnxruntime build lacks is an error.
    """
    import onnxruntime as ort

    providers = list(providers) if providers else ["CPUExecutionProvider"]
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise ModelRepositoryError(
            f"onnxruntime execution provider(s) {missing} are not available in this onnxruntime build "
            f"(available: {ort.get_available_providers()}); install onnxruntime-gpu for CUDA/TensorRT"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = int(intra_op_threads)
    if inter_op_threads:
        options.inter_op_num_threads = int(inter_op_threads)
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def session_io(session: onnxruntime.InferenceSession) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a session as TensorSpecs (symbolic dimensions become -1)."""

    def spec(arg: Any) -> TensorSpec:
        if arg.type not in ORT_TO_NUMPY:
            raise ModelRepositoryError(f"tensor {arg.name!r} has unsupported type {arg.type}")
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        return TensorSpec(arg.name, ORT_TO_NUMPY[arg.type], shape)

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


class OnnxModel:
    """One version of one model, ready to run: ``run({"attributes": ..., "z": ...})``.

    Inputs are checked against the graph (names, trailing dimensions) and cast to the graph's dtype
    only where that loses nothing (float64 -> float32 for float inputs, any integer type holding
    values in range -> uint8), so a caller's mistake is an error naming the input, not a crash deep
    inside onnxruntime.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        *,
        name: str,
        version: int,
        schema: AttributeSchema | None,
        path: Path | None = None,
    ) -> None:
        self.session = session
        self.name = name
        self.version = version
        self.schema = schema
        self.path = path
        self.inputs, self.outputs = session_io(session)
        self._input_by_name = {s.name: s for s in self.inputs}

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def __repr__(self) -> str:
        io = "; ".join(s.describe() for s in self.inputs) + " -> " + "; ".join(s.describe() for s in self.outputs)
        return f"OnnxModel({self.name!r}, version={self.version}, {io})"

    def _prepare(self, spec: TensorSpec, value: Any) -> np.ndarray:
        array = np.asarray(value)
        where = f"model {self.name!r} v{self.version} input {spec.name!r}"
        if array.ndim != len(spec.shape):
            raise ModelRepositoryError(f"{where}: expected {len(spec.shape)} dimensions ({spec.describe()}), "
                                       f"got shape {array.shape}")
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if want >= 0 and want != got:
                raise ModelRepositoryError(f"{where}: dimension {axis} must be {want} ({spec.describe()}), "
                                           f"got shape {array.shape}")
        if array.dtype == spec.dtype:
            return np.ascontiguousarray(array)
        if spec.dtype.kind == "f" and array.dtype.kind in "fiu":
            converted = array.astype(spec.dtype)
            if not np.all(np.isfinite(converted[np.isfinite(array)])):
                raise ModelRepositoryError(f"{where}: values overflow {spec.dtype.name}")
            return np.ascontiguousarray(converted)
        if spec.dtype.kind in "iu" and array.dtype.kind in "iu":
            info = np.iinfo(spec.dtype)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise ModelRepositoryError(f"{where}: values outside [{info.min}, {info.max}] for {spec.dtype.name}")
            return np.ascontiguousarray(array.astype(spec.dtype))
        raise ModelRepositoryError(f"{where}: expected {spec.dtype.name}, got {array.dtype.name}")

    def run(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the graph; returns every output (or those named) by name."""
        unknown = sorted(set(inputs) - set(self._input_by_name))
        missing = sorted(set(self._input_by_name) - set(inputs))
        if unknown or missing:
            raise ModelRepositoryError(
                f"model {self.name!r} v{self.version} takes inputs {list(self._input_by_name)}; "
                + (f"missing {missing}" if missing else "")
                + ("; " if missing and unknown else "")
                + (f"unknown {unknown}" if unknown else "")
            )
        feed = {name: self._prepare(spec, inputs[name]) for name, spec in self._input_by_name.items()}
        batch_sizes = {a.shape[0] for a in feed.values()}
        if len(batch_sizes) > 1:
            raise ModelRepositoryError(f"model {self.name!r}: inputs disagree on the batch size: "
                                       + ", ".join(f"{k} {v.shape[0]}" for k, v in feed.items()))
        names = list(outputs) if outputs else [s.name for s in self.outputs]
        values = self.session.run(names, feed)
        return dict(zip(names, values, strict=True))


class ModelRepository:
    """A Triton model repository on disk (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ModelRepositoryError(f"{self.path}: model repository not found (no such folder)")
        self._sessions: dict[tuple[Any, ...], OnnxModel] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.path)!r})"

    # -- layout -------------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """Names of the models (folders holding a config.pbtxt), sorted."""
        return sorted(p.name for p in self.path.iterdir() if (p / CONFIG_FILENAME).is_file())

    def model_dir(self, name: str) -> Path:
        folder = self.path / name
        if not (folder / CONFIG_FILENAME).is_file():
            known = ", ".join(self.model_names()) or "none"
            raise ModelRepositoryError(f"{self.path}: no model {name!r} (models: {known})")
        return folder

    def versions(self, name: str) -> list[int]:
        """Versions of ``name`` that hold a model file (ONNX or OpenVINO IR), ascending (Triton's numeric
        version folders)."""
        folder = self.model_dir(name)
        found = []
        for child in folder.iterdir():
            if (child.is_dir() and child.name.isdigit() and int(child.name) > 0
                    and any((child / f).is_file() for f in MODEL_FILENAMES)):
                found.append(int(child.name))
        return sorted(found)

    def latest_version(self, name: str) -> int:
        versions = self.versions(name)
        if not versions:
            raise ModelRepositoryError(f"{self.path / name}: no version folder with {' or '.join(MODEL_FILENAMES)}")
        return versions[-1]

    def model_path(self, name: str, version: int | None = None) -> Path:
        """The version's model file: model.onnx, or model.xml for an OpenVINO entry."""
        version = self._resolve_version(name, version)
        folder = self.path / name / str(version)
        return next((folder / f for f in MODEL_FILENAMES if (folder / f).is_file()), folder / MODEL_FILENAME)

    def model_format(self, name: str, version: int | None = None) -> str:
        """"onnx" or "openvino" (IR), by the version's model file."""
        return "openvino" if self.model_path(name, version).name == OPENVINO_FILENAME else "onnx"

    def _resolve_version(self, name: str, version: int | None) -> int:
        if version is None:
            return self.latest_version(name)
        versions = self.versions(name)
        if int(version) not in versions:
            raise ModelRepositoryError(f"{self.path / name}: no version {version} (versions: {versions or 'none'})")
        return int(version)

    # -- metadata -----------------------------------------------------------------------------------
    def config(self, name: str) -> model_config_pb2.ModelConfig:
        """The model's config.pbtxt parsed with Triton's own ModelConfig protobuf."""
        return parse_config_text((self.model_dir(name) / CONFIG_FILENAME).read_text(encoding="utf-8"),
                                 source=str(self.path / name / CONFIG_FILENAME))

    def metadata(self, name: str) -> dict[str, Any]:
        """The whole attributes.json: the schema plus facts about the model (kind, image size, ...)."""
        path = self.model_dir(name) / ATTRIBUTES_FILENAME
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelRepositoryError(f"{path}: missing (every model needs its attribute spec)") from exc
        except json.JSONDecodeError as exc:
            raise ModelRepositoryError(f"{path}: not valid JSON ({exc})") from exc

    def schema(self, name: str) -> AttributeSchema:
        """The attribute schema the model was trained with (its attributes.json)."""
        try:
            return AttributeSchema.from_dict(self.metadata(name))
        except ValueError as exc:
            if isinstance(exc, ModelRepositoryError):
                raise
            raise ModelRepositoryError(f"{self.path / name / ATTRIBUTES_FILENAME}: {exc}") from exc

    def model_card(self, name: str) -> str:
        path = self.model_dir(name) / MODEL_CARD_FILENAME
        if not path.is_file():
            raise ModelRepositoryError(f"{path}: missing model card")
        return path.read_text(encoding="utf-8")

    def export_info(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Provenance and parity figures of one version (export.json), or {} if absent."""
        path = self.model_path(name, version).parent / EXPORT_INFO_FILENAME
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    # -- running ------------------------------------------------------------------------------------
    def session(
        self,
        name: str,
        version: int | None = None,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        device: str | None = None,
    ) -> OnnxModel:
        """An onnxruntime session for ``name`` (newest version unless given); cached and thread-safe.

        ``providers`` names onnxruntime execution providers explicitly; ``device`` ("cpu", "cuda",
        "auto") picks them instead (see ``providers_for``). Default: CPU.
        """
        if device is not None:
            if providers:
                raise ModelRepositoryError("give either providers or device, not both")
            providers = providers_for(device)
        version = self._resolve_version(name, version)
        if self.model_format(name, version) != "onnx":
            raise ModelRepositoryError(f"{self.path / name} v{version} is OpenVINO IR, not ONNX: Triton's OpenVINO "
                                       f"backend serves it (the photoreal method runs it in-process itself)")
        key = (name, version, tuple(providers or ()), intra_op_threads)
        with self._lock:
            if key not in self._sessions:
                path = self.path / name / str(version) / MODEL_FILENAME
                session = create_session(path, providers=providers, intra_op_threads=intra_op_threads)
                self._sessions[key] = OnnxModel(session, name=name, version=version,
                                                schema=self.schema(name), path=path)
            return self._sessions[key]


def openvino_io(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ``openvino.Model`` as TensorSpecs (dynamic dimensions become -1)."""

    def spec(port: Any) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()), shape)

    return [spec(p) for p in model.inputs], [spec(p) for p in model.outputs]


def parse_config_text(text: str, *, source: str = "config.pbtxt") -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt text with Triton's ModelConfig protobuf; errors name the file and line."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelRepositoryError(f"{source}: not a valid Triton model config: {exc}") from exc


def config_io(config: model_config_pb2.ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs declared by a Triton config, with the batch dimension (-1) put back first."""
    from tritonclient.grpc import model_config_pb2

    def spec(tensor: Any) -> TensorSpec:
        type_name = model_config_pb2.DataType.Name(tensor.data_type)
        if type_name not in TRITON_TO_NUMPY:
            raise ModelRepositoryError(f"{config.name}: tensor {tensor.name!r} has unsupported type {type_name}")
        dims = tuple(int(d) for d in tensor.dims)
        return TensorSpec(tensor.name, TRITON_TO_NUMPY[type_name], ((-1,) if config.max_batch_size > 0 else ()) + dims)

    return [spec(t) for t in config.input], [spec(t) for t in config.output]
