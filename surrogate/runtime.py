"""The model runtime: the one home of "attributes + seed -> pixels" for every caller.

A surrogate depends only on (attributes, seed, model version). This module is where that rule lives:

* the seed rule: image ``k`` of record ``r`` of a request (or row ``r`` of a file) with base seed ``s``
  uses seed ``s + r*n + k`` (``surrogate.noise.record_seeds`` / ``row_seed``, the single definition);
* ``generator_noise`` turns those seeds into the generator's z (one stream per seed, so an image does not
  depend on how a request is batched, chunked or sharded);
* a ``Backend`` runs the networks: ``OnnxRuntimeBackend`` in this process, ``TritonBackend`` on a Triton
  server; both take the same arrays and return the same arrays;
* ``generate_images`` is the one generator run (validation, noise, then ``run_generator``: chunks and
  NCHW -> HWC by ``to_hwc``).

Synthesis, batch synthesis, the Python clients, the GAN evaluation and the audit call it; the service
only adapts it to HTTP. This module imports nothing above the core (service/, training/, export/,
audit/, annotation/); ``tests/test_runtime.py`` keeps it so.

Another embedded backend (e.g. OpenVINO) plugs in by implementing ``Backend`` (``generate(attributes,
z)`` -> uint8 NCHW, ``gan``/``recon`` as ``ModelInfo``) and calling ``register_backend``; its z width
comes from its ``ModelInfo`` and its z law from ``ModelInfo.noise`` (a key of ``NOISE``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from surrogate.model_repo import ModelRepository, ModelRepositoryError, TensorSpec, config_io
from surrogate.noise import record_seeds, row_seed, z_batch
from surrogate.portraits import z_for_seeds
from surrogate.schema import AttributeSchema

__all__ = [
    "BACKENDS",
    "GAN_MODEL",
    "NOISE",
    "RECON_MODEL",
    "Backend",
    "BackendError",
    "ModelInfo",
    "OnnxRuntimeBackend",
    "TritonBackend",
    "default_repository",
    "generate_images",
    "generator_noise",
    "open_backend",
    "record_seeds",
    "register_backend",
    "require",
    "row_seed",
    "run_generator",
    "to_hwc",
]

GAN_MODEL = "gan_generator"
RECON_MODEL = "recon"

# z laws by name: seeds + width -> (N, width) float32. The project's generators draw U(-1, 1); the portrait
# generator of the photoreal method (surrogate.photoreal) draws its 512-d standard normal from its own stream.
NOISE: dict[str, Callable[[Sequence[int], int], np.ndarray]] = {
    "uniform": z_batch,
    "portrait": lambda seeds, width: z_for_seeds(seeds),
}


def default_repository() -> Path:
    """``$SURROGATE_MODEL_REPOSITORY`` or the repository's own ``model_repository/``."""
    env = os.environ.get("SURROGATE_MODEL_REPOSITORY")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "model_repository"


class BackendError(RuntimeError):
    """A backend cannot run a model (not loaded, server unreachable); the service answers 503."""


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to know about one served model."""

    name: str
    version: int
    schema: AttributeSchema
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    noise: str = "uniform"  # the z law, a key of NOISE; travels with to_dict so a front end draws the same z

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise BackendError(f"model {self.name!r} has no input {name!r}")

    @property
    def z_dim(self) -> int:
        """Width of the generator's noise input ``z`` (read from the model, never assumed)."""
        return int(self.input("z").shape[-1])

    def to_dict(self) -> dict[str, Any]:
        def tensors(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
            return [{"name": s.name, "dtype": s.dtype.name, "shape": list(s.shape)} for s in specs]

        return {
            "name": self.name,
            "version": self.version,
            "attributes": self.schema.to_dict()["attributes"],
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
            "noise": self.noise,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        """Inverse of ``to_dict`` (the service's worker sends model facts to its front end this way)."""

        def tensors(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t["name"], np.dtype(t["dtype"]), tuple(t["shape"])) for t in items)

        return cls(
            name=data["name"],
            version=int(data["version"]),
            schema=AttributeSchema.from_dict({"attributes": data["attributes"]}),
            inputs=tensors(data["inputs"]),
            outputs=tensors(data["outputs"]),
            noise=data.get("noise", "uniform"),
        )


class Backend(Protocol):
    """Where the networks run. Every implementation takes and returns the same arrays."""

    kind: str
    gan: ModelInfo | None
    recon: ModelInfo | None

    def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, A) float32 natural units + (N, Z) float32 noise -> (N, C, H, W) uint8."""

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """(N, C, S, S) uint8 aligned crops -> (N, A) float32 attributes in natural units."""

    def close(self) -> None: ...


def require(info: ModelInfo | None, role: str) -> ModelInfo:
    """``info``, or a BackendError saying that no ``role`` model is loaded."""
    if info is None:
        raise BackendError(f"no {role} model is loaded")
    return info


def _names(*names: str | None) -> str:
    return ", ".join(repr(n) for n in names if n is not None)


class OnnxRuntimeBackend:
    """onnxruntime sessions from a model repository, in this process (CPU, or CUDA if asked).

    ``gan_model`` / ``recon_model`` name the models to load (their newest versions); None skips one
    (synthesis needs only the generator). At least one of them must be in the repository.
    """

    kind = "embedded"

    def __init__(
        self,
        repository: str | os.PathLike[str] | ModelRepository | None = None,
        *,
        gan_model: str | None = GAN_MODEL,
        recon_model: str | None = RECON_MODEL,
        device: str = "cpu",
        intra_op_threads: int | None = None,
    ) -> None:
        # A ModelRepository object brings its cache of open sessions with it.
        self.repository = (repository if isinstance(repository, ModelRepository)
                           else ModelRepository(repository or default_repository()))
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
        names = self.repository.model_names()
        self._models = {}
        for role, name in (("gan", gan_model), ("recon", recon_model)):
            if name is not None and name in names:
                self._models[role] = self.repository.session(
                    name, providers=providers, intra_op_threads=intra_op_threads
                )
        if not self._models:
            raise ModelRepositoryError(
                f"{self.repository.path}: none of {_names(gan_model, recon_model)} is in the model repository "
                f"(models: {names or 'none'}); run `surrogate export` first"
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
        require(self.gan, "generator")
        return self._models["gan"].run({"attributes": attributes, "z": z}, outputs=["image"])["image"]

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        require(self.recon, "reconstruction")
        return self._models["recon"].run({"image": images}, outputs=["attributes"])["attributes"]

    def close(self) -> None:
        self._models.clear()


class TritonBackend:
    """tritonclient over HTTP or gRPC to a running Triton server holding the exported models.

    The local ``repository`` (the files Triton itself was given) supplies the attribute schemas and
    tensor shapes; Triton says which versions are loaded. ``wait_s`` waits that long for the server.
    """

    kind = "triton"

    def __init__(
        self,
        url: str,
        *,
        protocol: str = "http",
        timeout_s: float = 30.0,
        repository: str | os.PathLike[str] | None = None,
        gan_model: str | None = GAN_MODEL,
        recon_model: str | None = RECON_MODEL,
        wait_s: float = 0.0,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"Triton protocol {protocol!r}: expected http or grpc")
        self.protocol = protocol
        self.url = url
        self.timeout_s = timeout_s
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
        self.repository = ModelRepository(repository or default_repository())
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
            raise BackendError(f"Triton at {self.protocol}://{self.url} is not ready ({error or 'not ready'})")
        self.gan = self._info(gan_model) if gan_model is not None else None
        self.recon = self._info(recon_model) if recon_model is not None else None
        if self.gan is None and self.recon is None:
            raise BackendError(f"Triton at {self.url} serves none of {_names(gan_model, recon_model)}")

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
        from tritonclient.utils import np_to_triton_dtype

        inputs = []
        for name, array in feeds.items():
            spec = info.input(name)
            array = np.ascontiguousarray(array, dtype=spec.dtype)
            tensor = self._module.InferInput(name, list(array.shape), np_to_triton_dtype(spec.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [self._module.InferRequestedOutput(output)]
        # gRPC takes a per-call deadline; the HTTP client got its timeouts when it was created.
        deadline = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            result = self._client.infer(
                info.name, inputs, model_version=str(info.version), outputs=outputs, **deadline
            )
        except Exception as exc:  # noqa: BLE001 - InferenceServerException and transport errors
            raise BackendError(f"Triton {info.name!r} v{info.version} failed: {exc}") from exc
        return result.as_numpy(output)

    def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self._infer(require(self.gan, "generator"), {"attributes": attributes, "z": z}, "image")

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        return self._infer(require(self.recon, "reconstruction"), {"image": images}, "attributes")

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        if self._shared_client is not None:
            clients.append(self._shared_client)
        for client in clients:
            client.close()


BACKENDS: dict[str, Callable[..., Backend]] = {"embedded": OnnxRuntimeBackend, "triton": TritonBackend}


def register_backend(kind: str, factory: Callable[..., Backend]) -> None:
    """Make ``open_backend(kind, ...)`` (and the service's SURROGATE_BACKEND) build ``factory(...)``."""
    BACKENDS[kind] = factory


def open_backend(kind: str, **options: Any) -> Backend:
    """The backend called ``kind``, built from its own keyword options (repository, url, ...)."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[kind](**options)


def generator_noise(seeds: Sequence[int], info: ModelInfo) -> np.ndarray:
    """The z of each seed for the generator ``info``: where a request's seed becomes the network's noise."""
    return NOISE[info.noise](list(seeds), info.z_dim)


def to_hwc(images: np.ndarray) -> np.ndarray:
    """Generator output (N, C, H, W) -> (N, H, W) for one channel, else (N, H, W, C)."""
    return images[:, 0] if images.shape[1] == 1 else np.transpose(images, (0, 2, 3, 1))


def run_generator(backend: Backend, attributes: np.ndarray, z: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """The generator on (N, A) natural units and (N, Z) noise in chunks of ``batch_size`` rows -> uint8
    (N, H, W) or (N, H, W, C). Callers holding seeds use ``generate_images``."""
    chunks = [
        backend.generate(attributes[start : start + batch_size], z[start : start + batch_size])
        for start in range(0, len(attributes), batch_size)
    ]
    if not chunks:
        return np.zeros((0, 1, 1), np.uint8)
    return np.ascontiguousarray(to_hwc(np.concatenate(chunks)))


def generate_images(
    backend: Backend, values: np.ndarray, seeds: Sequence[int], *, batch_size: int = 64
) -> np.ndarray:
    """One surrogate per row of ``values`` (natural units, the generator's schema order) and seed:
    uint8 (N, H, W) or (N, H, W, C). Validates the values, draws each seed's z, runs the generator."""
    info = require(backend.gan, "generator")
    values = info.schema.validate_array(np.asarray(values, dtype=np.float32), source="attributes")
    if len(values) != len(seeds):
        raise ValueError(f"{len(values)} attribute rows but {len(seeds)} seeds")
    return run_generator(backend, values, generator_noise(seeds, info), batch_size=batch_size)
