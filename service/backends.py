"""Where the networks run: ``embedded`` (onnxruntime in this process) or ``triton`` (a Triton server).

Both backends take the same numpy arrays and return the same arrays, so the HTTP layer never knows
which one it talks to, and the same (attributes, z) give the same image through either (tested).
The Triton backend still reads the *local* model repository for the attribute schemas and tensor
shapes (attributes.json / config.pbtxt are the files Triton itself was given), and asks Triton which
versions are loaded. Nothing here imports torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.config import ServiceConfig
from surrogate.model_repo import ModelRepository, ModelRepositoryError, TensorSpec, config_io
from surrogate.schema import AttributeSchema


class BackendError(RuntimeError):
    """The backend cannot run a model (not loaded, server unreachable); the service answers 503."""


@dataclass(frozen=True)
class ModelInfo:
    """What the service needs to know about one served model."""

    name: str
    version: int
    schema: AttributeSchema
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise BackendError(f"model {self.name!r} has no input {name!r}")

    def to_dict(self) -> dict[str, Any]:
        def tensors(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
            return [{"name": s.name, "dtype": s.dtype.name, "shape": list(s.shape)} for s in specs]

        return {
            "name": self.name,
            "version": self.version,
            "attributes": self.schema.to_dict()["attributes"],
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
        }


class Backend(Protocol):
    """The operations the service needs; implemented by EmbeddedBackend and TritonBackend."""

    kind: str
    gan: ModelInfo | None
    recon: ModelInfo | None

    def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, A) float32 natural units + (N, Z) float32 noise -> (N, C, H, W) uint8."""

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """(N, C, S, S) uint8 aligned crops -> (N, A) float32 attributes in natural units."""

    def close(self) -> None: ...


def _require(info: ModelInfo | None, role: str) -> ModelInfo:
    if info is None:
        raise BackendError(f"no {role} model is loaded")
    return info


class EmbeddedBackend:
    """onnxruntime sessions from the model repository, in this process (CPU, or CUDA if asked)."""

    kind = "embedded"

    def __init__(self, config: ServiceConfig, *, intra_op_threads: int | None = None) -> None:
        self.repository = ModelRepository(config.model_repository)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if config.device == "cuda" else None
        names = self.repository.model_names()
        self._models = {}
        for role, name in (("gan", config.gan_model), ("recon", config.recon_model)):
            if name in names:
                self._models[role] = self.repository.session(
                    name, providers=providers, intra_op_threads=intra_op_threads
                )
        if not self._models:
            raise ModelRepositoryError(
                f"{self.repository.path}: neither {config.gan_model!r} nor {config.recon_model!r} is in the "
                f"model repository (models: {names or 'none'}); run `surrogate export` first"
            )
        self.gan = self._info("gan")
        self.recon = self._info("recon")

    def _info(self, role: str) -> ModelInfo | None:
        model = self._models.get(role)
        if model is None:
            return None
        return ModelInfo(
            model.name,
            model.version,
            model.schema,
            tuple(model.inputs),
            tuple(model.outputs),
            self.repository.metadata(model.name),
        )

    def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        _require(self.gan, "generator")
        return self._models["gan"].run({"attributes": attributes, "z": z}, outputs=["image"])["image"]

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        _require(self.recon, "reconstruction")
        return self._models["recon"].run({"image": images}, outputs=["attributes"])["attributes"]

    def close(self) -> None:
        self._models.clear()


class TritonBackend:
    """tritonclient over HTTP or gRPC to a running Triton server holding the exported models."""

    kind = "triton"

    def __init__(self, config: ServiceConfig, *, wait_s: float = 0.0) -> None:
        self.protocol = config.triton_protocol
        self.url = config.triton_url
        self.timeout_s = config.triton_timeout_s
        if self.protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        self._module = client_module
        # tritonclient's gRPC client is thread-safe; its HTTP client (geventhttpclient) is not and fails
        # with "greenlet.error: Cannot switch to a different thread" when the BentoML worker calls it
        # from another thread than the one that created it, so HTTP gets one client per thread.
        self._shared_client = self._new_client() if self.protocol == "grpc" else None
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self.repository = ModelRepository(config.model_repository)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                live = self._client.is_server_ready()
            except Exception as exc:  # noqa: BLE001 - tritonclient raises several transport errors
                live, error = False, exc
            else:
                error = None
            if live or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if not live:
            raise BackendError(
                f"Triton at {self.protocol}://{self.url} is not ready ({error or 'not ready'})"
            )
        self.gan = self._info(config.gan_model)
        self.recon = self._info(config.recon_model)
        if self.gan is None and self.recon is None:
            raise BackendError(
                f"Triton at {self.url} serves neither {config.gan_model!r} nor {config.recon_model!r}"
            )

    def _new_client(self) -> Any:
        if self.protocol == "grpc":
            return self._module.InferenceServerClient(self.url)
        return self._module.InferenceServerClient(
            self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
        )

    @property
    def _client(self) -> Any:
        """The tritonclient client for the calling thread (one shared client for gRPC)."""
        if self._shared_client is not None:
            return self._shared_client
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client()
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _info(self, name: str) -> ModelInfo | None:
        if name not in self.repository.model_names():
            return None
        try:
            if not self._client.is_model_ready(name):
                return None
            metadata = self._client.get_model_metadata(name)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"Triton at {self.url}: cannot read model {name!r}: {exc}") from exc
        versions = metadata.versions if self.protocol == "grpc" else metadata.get("versions", [])
        version = max((int(v) for v in versions), default=self.repository.latest_version(name))
        inputs, outputs = config_io(self.repository.config(name))
        return ModelInfo(
            name,
            version,
            self.repository.schema(name),
            tuple(inputs),
            tuple(outputs),
            self.repository.metadata(name),
        )

    def _infer(self, info: ModelInfo, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        inputs = []
        for name, array in feeds.items():
            spec = info.input(name)
            array = np.ascontiguousarray(array, dtype=spec.dtype)
            tensor = self._module.InferInput(name, list(array.shape), _triton_dtype(spec.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [self._module.InferRequestedOutput(output)]
        try:
            if self.protocol == "grpc":
                result = self._client.infer(
                    info.name,
                    inputs,
                    model_version=str(info.version),
                    outputs=outputs,
                    client_timeout=self.timeout_s,
                )
            else:
                result = self._client.infer(
                    info.name, inputs, model_version=str(info.version), outputs=outputs
                )
        except Exception as exc:  # noqa: BLE001 - InferenceServerException and transport errors
            raise BackendError(f"Triton {info.name!r} v{info.version} failed: {exc}") from exc
        return result.as_numpy(output)

    def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self._infer(_require(self.gan, "generator"), {"attributes": attributes, "z": z}, "image")

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return self._infer(_require(self.recon, "reconstruction"), {"image": images}, "attributes")

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        if self._shared_client is not None:
            clients.append(self._shared_client)
        for client in clients:
            client.close()


def _triton_dtype(dtype: np.dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(np.dtype(dtype))


def create_backend(config: ServiceConfig, **kwargs: Any) -> Backend:
    """The backend the configuration asks for."""
    factories: dict[str, Callable[..., Backend]] = {"embedded": EmbeddedBackend, "triton": TritonBackend}
    return factories[config.backend](config, **kwargs)


def model_info_from_dict(data: dict[str, Any]) -> ModelInfo:
    """Inverse of ``ModelInfo.to_dict`` (the worker process sends model facts to the front end this way)."""

    def tensors(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(t["name"], np.dtype(t["dtype"]), tuple(t["shape"])) for t in items)

    return ModelInfo(
        name=data["name"],
        version=int(data["version"]),
        schema=AttributeSchema.from_dict({"attributes": data["attributes"]}),
        inputs=tensors(data["inputs"]),
        outputs=tensors(data["outputs"]),
    )
