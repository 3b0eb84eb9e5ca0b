"""Photoreal surrogates: a portrait of nobody, steered in w so that MediaPipe reads the requested attributes.

The third method beside the 3-D renderer and the GAN (``--method photoreal``). For one row of attributes and
one seed:

1. identity from the seed alone: seed -> z (``noise.STREAM_PORTRAIT_Z``) -> w0 (mapping network, truncation
   psi around the fixed mean w; ``surrogate.portraits``);
2. expression, pose and gender from the attributes alone: the closed-form edit of w0 along the conditioned
   directions (``surrogate.portrait_directions``) that sets the read-out to a *calibrated* target. Moving w
   moves MediaPipe's reading less than the read-out predicts (gains 0.2-0.8), so the target is the inverse of
   a per-attribute linear model ``read = a + b * readout(w0) + c * target`` fitted on the method's own
   renders (``portrait_models/photoreal_calibration.npz``, ``scripts/fit_photoreal_calibration.py
   --renders``: a corpus edited along other directions gave gains that did not hold for these);
   the step is clipped to what the generator can show without breaking the face;
3. the 1024 px portrait, shrunk to 512, rotated in the image plane by the roll (FFHQ faces are
   roll-normalised, so roll is not in w), framed by ``surrogate.face_align`` (MediaPipe landmarks: the
   project's one framing; a fixed frame when no face is found) and cut at ``RENDER_SIDE`` px colour.
   Callers shrink and grey it (``surrogate.synthesis``).

Nothing else enters: a surrogate depends on (attributes, seed, model version) only. AU06 is ignored: it has
no direction in w (MediaPipe's AU06 is a proxy of AU07 and AU12). The weights are distilled from NVIDIA
StyleGAN2-FFHQ: research and non-commercial use only (``LICENCE``).

``PhotorealBackend`` implements ``surrogate.runtime.Backend`` (``generate(attributes, z)``), so the runtime's
seed rule and ``generate_images`` serve it as they serve the GAN.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from surrogate.assets import FACE_LANDMARKER, PORTRAIT_GENERATOR
from surrogate.model_repo import TensorSpec
from surrogate.portrait_directions import AttributeDirections
from surrogate.portraits import FULL_SIDE, PortraitGenerator, PortraitModelError, compile_cpu, downscale
from surrogate.runtime import ModelInfo
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema

PHOTOREAL_MODEL = "photoreal"
PHOTOREAL_VERSION = 5  # bump when the edit, the framing or a model file changes the pixels
RENDER_SIDE = 256  # the backend's output; 64 and 128 are area-shrunk from it
WORK_SIDE = 512  # the portrait is rotated and framed at this size (as the portrait corpus is)
MODELS_DIR = Path(__file__).resolve().parent / "portrait_models"
DIRECTIONS_FILE = "directions.npz"
CALIBRATION_FILE = "photoreal_calibration.npz"  # an .npz: package data, like the other model files
# Where the face sits in a roll-free 512 px portrait when MediaPipe finds none (the median landmark frame
# of the calibration portraits): the output is then still a framed face, never an error.
FALLBACK_FRAME = (256.0, 284.0, 330.0)
LICENCE = PORTRAIT_GENERATOR.licence
# Rounds of read-and-correct after the closed-form edit (each one more render and MediaPipe reading).
REFINE_ROUNDS = 2
# Turned further than this, the portraits distort (the generator saw few such faces): yaw requests beyond it
# are rendered at it.
MAX_YAW = 35.0
# The largest change of w one surrogate's edit may make (Euclidean, in w's units; w0 lies about 6.6 from the
# mean w). Broken renders (smeared, grey or melted skin) come with large edits, mostly their yaw and gender
# parts: the edit's norm told them from the rest at AUC 0.89. A longer edit is shortened to this length, so
# the attributes of such a request are rendered weaker, not broken; 8 against 10 trades 0.04 of gender AUC
# and 0.03 of yaw r for about half the faces off the natural portraits (docs/photoreal.md, "Realism").
EDIT_BUDGET = 8.0


def photoreal_available() -> bool:
    """OpenVINO and MediaPipe are installed and the portrait and landmark model files are fetched."""
    from importlib.util import find_spec

    return (find_spec("openvino") is not None and find_spec("mediapipe") is not None
            and not PORTRAIT_GENERATOR.missing() and not FACE_LANDMARKER.missing())


@dataclass(frozen=True)
class Calibration:
    """Per direction: MediaPipe's reading ~ a + b * readout(w0) + c * target; |target - readout(w0)| <= limit.

    ``step``: how much the reading moves per read-out unit of a refinement round's correction (measured on
    corrections, which are small moves around an edited w, where the gain differs from ``c``'s: AU23's is
    twice as large); it defaults to ``c``.
    """

    names: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    limit: np.ndarray
    step: np.ndarray | None = None

    @property
    def step_gain(self) -> np.ndarray:
        return self.c if self.step is None else self.step

    @classmethod
    def identity(cls, names: tuple[str, ...], limit: np.ndarray) -> Calibration:
        k = len(names)
        return cls(names, np.zeros(k, np.float32), np.zeros(k, np.float32), np.ones(k, np.float32),
                   np.asarray(limit, np.float32))

    def target(self, requested: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """The read-out target that makes the reading ``requested`` (N, K), given the read-out of w0."""
        raw = (requested - self.a - self.b * predicted) / self.c
        return (predicted + np.clip(raw - predicted, -self.limit, self.limit)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {name: {"a": float(self.a[k]), "b": float(self.b[k]), "c": float(self.c[k]),
                       "limit": float(self.limit[k]), **({} if self.step is None else {"step": float(self.step[k])})}
                for k, name in enumerate(self.names)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], names: tuple[str, ...]) -> Calibration:
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"calibration has no entry for {missing}")
        columns = {key: np.array([float(data[n][key]) for n in names], np.float32) for key in ("a", "b", "c", "limit")}
        step = None
        if all("step" in data[n] for n in names):
            step = np.array([float(data[n]["step"]) for n in names], np.float32)
        if np.any(columns["c"] <= 0) or (step is not None and np.any(step <= 0)):
            raise ValueError("calibration gains c and step must be positive")
        return cls(names, columns["a"], columns["b"], columns["c"], columns["limit"], step)

    @classmethod
    def load(cls, path: str | Path, names: tuple[str, ...]) -> Calibration:
        """Read a calibration file (its ``calibration`` entry: the JSON of ``to_dict``)."""
        with np.load(path) as data:
            return cls.from_dict(json.loads(str(data["calibration"])), names)

    def save(self, path: str | Path, **info: object) -> None:
        from surrogate.imageio import atomic_open

        with atomic_open(path) as handle:
            np.savez(handle, calibration=np.array(json.dumps(self.to_dict())),
                     info=np.array(json.dumps(info, default=str)))


SYNTHESIS_MODEL = "portrait_synthesis"  # the Triton entry that serves ``synthesis_model``
PORTRAIT_OUTPUT = "portrait"  # its output tensor


def synthesis_model(*, batch: int = -1, model_dir: str | None = None):
    """The graph that renders portraits: the styles -> (N, 512, 512, 3) uint8 RGB portraits (an ``ov.Model``).

    The one definition of the heavy step: the embedded backend compiles it at its fixed batch, and
    ``surrogate export photoreal`` saves it with ``batch=-1`` (any batch) as the IR of the Triton entry
    ``SYNTHESIS_MODEL``, whose config.pbtxt is derived from this model's parameters and results. The pixels
    are quantised inside the graph, so both paths return the same uint8 array and a Triton reply carries
    0.75 MB a portrait (the low band as float32 would be 3 MB, the 12 bands 12.6 MB).
    """
    return HalfResolutionGenerator(model_dir=model_dir)._read("SynthesisNetwork", "style", batch, cut=_portrait_graph)


def _portrait_graph(model):
    """MobileStyleGAN's synthesis network cut at its 512 px wavelet bands, ending in uint8 RGB (NHWC).

    The last block outputs Haar wavelet bands at 512 px (12 channels: the low band of R, G, B, then the
    detail bands) and the network ends with their inverse transform to 1024 px. The low band is twice the
    mean of each 2x2 block, so ``0.5 * low`` IS the 1024 px portrait averaged down to 512 px (to float
    rounding; the pixels differ by at most one level of quantisation), without the inverse transform: 0.39
    instead of 0.51 CPU-seconds per portrait on these cores. Nothing cheaper exists in this network: the
    earlier blocks (256 px and below) have no output layer of their own.
    """
    import openvino as ov
    import openvino.opset13 as ops

    side = model.outputs[0].get_partial_shape()[2].get_length()
    want = [12, side // 2, side // 2]
    bands = [op for op in model.get_ordered_ops() if op.get_output_size() == 1
             and op.get_output_partial_shape(0).rank.get_length() == 4
             and [d.get_length() if d.is_static else -1 for d in op.get_output_partial_shape(0)][1:] == want]
    if not bands:
        raise PortraitModelError("the portrait network is not the expected MobileStyleGAN (no wavelet output)")
    # the last such op is the bands with their bias added, what the inverse transform reads. Every new node is
    # named: unnamed ones get a per-process counter, and the saved IR would differ from run to run.
    def const(name: str, value: Any):
        return ops.constant(np.asarray(value), name=f"portrait/{name}")

    low = ops.slice(bands[-1].output(0), const("start", [0]), const("stop", [3]), const("step", [1]),
                    const("axis", [1]), name="portrait/low")
    # (0.5 low + 1) * 127.5, in the order the float pixels were always quantised
    half = ops.multiply(low, const("half", np.float32(0.5)), name="portrait/half")
    shifted = ops.add(half, const("one", np.float32(1.0)), name="portrait/shifted")
    level = ops.multiply(shifted, const("scale", np.float32(127.5)), name="portrait/level")
    rounded = ops.round(level, "half_to_even", name="portrait/rounded")
    pixels = ops.convert(ops.clamp(rounded, 0.0, 255.0, name="portrait/clamped"), ov.Type.u8, name="portrait/u8")
    portrait = ops.transpose(pixels, const("nhwc", [0, 2, 3, 1]), name="portrait/nhwc")
    portrait.output(0).get_tensor().set_names({PORTRAIT_OUTPUT})
    result = ops.result(portrait, name="portrait/result")
    return ov.Model([result], model.get_parameters(), "PortraitSynthesis")


class HalfResolutionGenerator(PortraitGenerator):
    """The portrait generator stopped before its last step: the 512 px portrait (``synthesis_model``)."""

    @cached_property
    def _synthesis(self):
        return compile_cpu(synthesis_model(batch=self.batch, model_dir=self.model_dir), self.threads)

    def render(self, w: np.ndarray, side: int = FULL_SIDE // 2) -> np.ndarray:
        """Portraits for w (N, 512): (N, side, side, 3) uint8 RGB, side <= 512."""
        check_side(side)
        portraits = self._run(self._synthesis, np.asarray(w, np.float32))
        return shrink(portraits, side)


def check_side(side: int) -> None:
    if side > FULL_SIDE // 2:
        raise ValueError(f"the half-resolution path renders at most {FULL_SIDE // 2} px, not {side}")


def shrink(portraits: np.ndarray, side: int) -> np.ndarray:
    """(N, 512, 512, 3) uint8 portraits -> (N, side, side, 3) (area-averaged)."""
    if not len(portraits):
        return np.zeros((0, side, side, 3), np.uint8)
    return np.stack([downscale(p, side) for p in portraits])


class PortraitRenderer(Protocol):
    """Where the heavy step runs: w -> (N, side, side, 3) uint8 RGB portraits, side <= 512."""

    def render(self, w: np.ndarray, side: int = FULL_SIDE // 2) -> np.ndarray: ...


class TritonPortraitRenderer:
    """The synthesis network on a Triton server (entry ``SYNTHESIS_MODEL``); mapping, edit and framing stay here.

    Asks for version ``PHOTOREAL_VERSION`` of the entry, so a server holding another version of the graph
    is an error, never other pixels. Sends at most ``batch`` rows a call (Triton's dynamic batcher merges
    concurrent calls).
    """

    def __init__(self, url: str, *, protocol: str = "http", timeout_s: float = 60.0, batch: int = 4,
                 model: str = SYNTHESIS_MODEL, version: int | None = None) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"Triton protocol {protocol!r}: expected http or grpc")
        self.url, self.protocol, self.timeout_s, self.batch, self.model = url, protocol, timeout_s, batch, model
        self.version = PHOTOREAL_VERSION if version is None else int(version)
        if protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        self._module = client_module
        self._local = threading.local()  # tritonclient's HTTP client must stay in the thread that made it
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()

    @property
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = (
                self._module.InferenceServerClient(self.url) if self.protocol == "grpc" else
                self._module.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                   network_timeout=self.timeout_s))
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def input_name(self) -> str:
        metadata = self._client.get_model_metadata(self.model, str(self.version))
        inputs = metadata.inputs if self.protocol == "grpc" else metadata["inputs"]
        return inputs[0].name if self.protocol == "grpc" else inputs[0]["name"]

    @cached_property
    def _input(self) -> str:
        from surrogate.runtime import BackendError

        try:
            return self.input_name()
        except Exception as exc:  # noqa: BLE001 - tritonclient raises several transport errors
            raise BackendError(f"Triton at {self.url} does not serve {self.model!r} v{self.version}: {exc}") from exc

    def render(self, w: np.ndarray, side: int = FULL_SIDE // 2) -> np.ndarray:
        from tritonclient.utils import np_to_triton_dtype

        from surrogate.runtime import BackendError

        check_side(side)
        w = np.ascontiguousarray(w, np.float32)
        parts = []
        deadline = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        for start in range(0, len(w), self.batch):
            chunk = w[start:start + self.batch]
            tensor = self._module.InferInput(self._input, list(chunk.shape), np_to_triton_dtype(chunk.dtype))
            tensor.set_data_from_numpy(chunk)
            try:
                result = self._client.infer(self.model, [tensor], model_version=str(self.version),
                                            outputs=[self._module.InferRequestedOutput(PORTRAIT_OUTPUT)], **deadline)
            except Exception as exc:  # noqa: BLE001 - InferenceServerException and transport errors
                raise BackendError(f"Triton {self.model!r} v{self.version} at {self.url} failed: {exc}") from exc
            parts.append(result.as_numpy(PORTRAIT_OUTPUT))
        return shrink(np.concatenate(parts) if parts else np.zeros((0, 1, 1, 3), np.uint8), side)


# How far one read-out unit may move w0 (attribute units): the corpus's edits reach about 3 spreads.
LIMIT_SPREADS = 3.0
# Gender's read-out (the boundary's probability) has no corpus spread. Since version 5 gender steps along the
# boundary's normal, and one read-out unit moves the recon reading by about one (calibration gain 1.0; the
# conditioned direction before moved it by 0.3, which needed this limit of 2.5 to separate the sides): the
# calibrated steps of the 500 benchmark requests stay within 1.3, so the limit only catches a w0 whose
# read-out lies far outside 0..1.
GENDER_LIMIT = 2.5


def step_limits(directions: AttributeDirections) -> np.ndarray:
    """The largest read-out step per direction (a step beyond it breaks the face)."""
    return np.where(directions.spread > 0, LIMIT_SPREADS * directions.spread, GENDER_LIMIT).astype(np.float32)


def schema_columns(schema: AttributeSchema, names: tuple[str, ...]) -> list[int]:
    """Index in ``schema`` of each direction name (every direction is a schema attribute)."""
    return [schema.index(n) for n in names]


class PhotorealBackend:
    """The photoreal method as a runtime backend: attributes (N, A) + z (N, 512) -> (N, 3, S, S).

    The mapping network and the edit of w (cheap) and the roll and framing (MediaPipe) run in this process;
    the synthesis network (~0.4 CPU-s a portrait) runs where ``renderer`` says: in this process through
    OpenVINO (default), or on Triton (``TritonPortraitRenderer``), with the same pixels.
    """

    kind = "photoreal"
    recon: ModelInfo | None = None

    def __init__(self, *, psi: float = 0.7, batch: int = 4, threads: int = 0, model_dir: str | None = None,
                 models: str | Path | None = None, calibrated: bool = True, refine: int | None = None,
                 renderer: PortraitRenderer | None = None, edit_budget: float | None = EDIT_BUDGET) -> None:
        self.refine = REFINE_ROUNDS if refine is None else int(refine)
        if self.refine < 0:
            raise ValueError(f"refine must be >= 0, got {refine}")
        if edit_budget is not None and not edit_budget > 0:
            raise ValueError(f"edit_budget must be > 0 or None (no limit), got {edit_budget}")
        self.edit_budget = edit_budget
        self.generator = HalfResolutionGenerator(psi=psi, batch=batch, threads=threads, model_dir=model_dir)
        self.renderer: PortraitRenderer = renderer or self.generator
        folder = Path(models or MODELS_DIR)
        self.directions = AttributeDirections.load(folder / DIRECTIONS_FILE)
        calibration_path = folder / CALIBRATION_FILE
        if calibrated and calibration_path.exists():
            self.calibration = Calibration.load(calibration_path, self.directions.names)
        else:
            self.calibration = Calibration.identity(self.directions.names, step_limits(self.directions))
        self.schema = DEFAULT_SCHEMA
        self._columns = schema_columns(self.schema, self.directions.names)
        self._roll = self.schema.index("roll")
        self._yaw = self.directions.names.index("yaw")
        self._lock = threading.Lock()  # the MediaPipe reader is not shared between threads
        digest = hashlib.sha256()
        for path in (folder / DIRECTIONS_FILE, calibration_path):
            if path.exists():
                digest.update(path.read_bytes())
        side = RENDER_SIDE
        self.gan = ModelInfo(
            PHOTOREAL_MODEL, PHOTOREAL_VERSION, self.schema,
            (TensorSpec("attributes", np.dtype(np.float32), (-1, len(self.schema))),
             TensorSpec("z", np.dtype(np.float32), (-1, 512))),
            (TensorSpec("image", np.dtype(np.uint8), (-1, 3, side, side)),),
            {"licence": LICENCE, "psi": psi, "calibrated": bool(calibrated and calibration_path.exists()),
             "models_sha256": digest.hexdigest()[:16],
             "backend": "triton" if isinstance(self.renderer, TritonPortraitRenderer) else "openvino",
             "refine": self.refine, "max_yaw": MAX_YAW, "edit_budget": edit_budget},
            noise="portrait",
        )

    @cached_property
    def _reader(self):
        from surrogate.landmarks import FaceLandmarks

        return FaceLandmarks()

    def base_latents(self, z: np.ndarray) -> np.ndarray:
        """The seed's person: w0 = w_avg + psi (map(z) - w_avg), (N, 512)."""
        generator = self.generator
        return generator.w_avg + np.float32(generator.psi) * (generator.map(z) - generator.w_avg)

    def requested(self, attributes: np.ndarray) -> np.ndarray:
        """The directions' columns of the attributes (N, K), yaw clamped to what the generator can turn."""
        requested = np.asarray(attributes, np.float32)[:, self._columns].copy()
        requested[:, self._yaw] = np.clip(requested[:, self._yaw], -MAX_YAW, MAX_YAW)
        return requested

    def targets(self, requested: np.ndarray, w0: np.ndarray) -> np.ndarray:
        """The calibrated read-out targets (N, K) that should make MediaPipe read ``requested``."""
        # One row at a time: a matrix product's rounding depends on how many rows it has (BLAS picks other
        # kernels), and a surrogate must not depend on the other rows of its request.
        rows = [self.calibration.target(requested[i:i + 1], self.directions.predict(w0[i:i + 1]))
                for i in range(len(w0))]
        return np.concatenate(rows) if rows else np.zeros((0, len(self._columns)), np.float32)

    def edit(self, w0: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """w0 (N, 512) moved along the directions until the read-out equals ``targets`` (row by row), the
        move shortened to ``edit_budget`` where it is longer."""
        rows = [self._edit_row(w0[i:i + 1], targets[i:i + 1]) for i in range(len(w0))]
        return np.concatenate(rows) if rows else np.zeros((0, w0.shape[1]), np.float32)

    def _edit_row(self, w0: np.ndarray, target: np.ndarray) -> np.ndarray:
        w = self.directions.edit(w0, target).astype(np.float32)
        if self.edit_budget is None:
            return w
        length = float(np.linalg.norm(w - w0))
        if length <= self.edit_budget:
            return w
        return (w0 + (w - w0) * np.float32(self.edit_budget / length)).astype(np.float32)

    def latents(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The closed-form edited w (N, 512): w0 from z alone, moved so that the reading should match."""
        w0 = self.base_latents(np.asarray(z, np.float32))
        return self.edit(w0, self.targets(self.requested(attributes), w0))

    def corrected(self, targets: np.ndarray, requested: np.ndarray, w0: np.ndarray, reading) -> np.ndarray:
        """One refinement step of a row's targets (1, K): the residual of what MediaPipe read, over the gain.

        Gender is not read by MediaPipe and keeps its target; a step stays within the calibration's limits.
        """
        read = reading.array(self.directions.names)[None]
        residual = np.where(np.isnan(read), 0.0, requested - read) / self.calibration.step_gain
        predicted = self.directions.predict(w0)
        step = np.clip(targets + residual - predicted, -self.calibration.limit, self.calibration.limit)
        return (predicted + step).astype(np.float32)

    def frame(self, portrait: np.ndarray, roll: float, reading=None) -> np.ndarray:
        """A rolled WORK_SIDE portrait (``rolled``) -> the project's framing at RENDER_SIDE colour."""
        from surrogate.face_align import crop_square, landmark_frame

        if reading is None:
            centre_x, centre_y, side = FALLBACK_FRAME
            angle = np.radians(roll)  # the fixed frame turns with the image around the image's centre
            dx, dy = centre_x - WORK_SIDE / 2, centre_y - WORK_SIDE / 2
            box = (WORK_SIDE / 2 + dx * np.cos(angle) - dy * np.sin(angle),
                   WORK_SIDE / 2 + dx * np.sin(angle) + dy * np.cos(angle), side)
        else:
            box = landmark_frame(reading.landmarks)
        return crop_square(portrait, *box, RENDER_SIDE)

    def rolled(self, w: np.ndarray, rolls: np.ndarray) -> tuple[list[np.ndarray], list]:
        """Render w (N, 512) at WORK_SIDE, rotate each by its roll and read it: (portraits, readings or None)."""
        from surrogate.portrait_corpus import rotate_frame

        # outside the lock: each render makes its own infer request, and a Triton call may wait in its queue
        portraits = [rotate_frame(p, float(r)) for p, r in zip(self.renderer.render(w, side=WORK_SIDE), rolls,
                                                               strict=True)]
        with self._lock:  # one MediaPipe reader per backend
            return portraits, [self._reader.read(p) for p in portraits]

    def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, A) natural units (DEFAULT_SCHEMA order) + (N, 512) z -> (N, 3, RENDER_SIDE, RENDER_SIDE) uint8.

        The closed-form edit, then ``refine`` rounds of: read the render with MediaPipe, move each row's
        targets by its residual over the calibrated refinement gain, render again (a row is re-rendered only
        while a face is found; each round costs one more render and reading).
        """
        attributes = np.asarray(attributes, np.float32)
        if not len(attributes):
            return np.zeros((0, 3, RENDER_SIDE, RENDER_SIDE), np.uint8)
        rolls = attributes[:, self._roll]
        w0 = self.base_latents(np.asarray(z, np.float32))
        requested = self.requested(attributes)
        targets = self.targets(requested, w0)
        portraits, readings = self.rolled(self.edit(w0, targets), rolls)
        active = [i for i, reading in enumerate(readings) if reading is not None]
        for _ in range(self.refine):
            if not active:
                break
            for i in active:
                targets[i:i + 1] = self.corrected(targets[i:i + 1], requested[i:i + 1], w0[i:i + 1],
                                                  readings[i])
            again, reread = self.rolled(self.edit(w0[active], targets[active]), rolls[active])
            kept = []
            for j, i in enumerate(active):
                if reread[j] is not None:  # a round that loses the face keeps the previous render and stops
                    portraits[i], readings[i] = again[j], reread[j]
                    kept.append(i)
            active = kept
        crops = [self.frame(p, float(r), reading) for p, r, reading in zip(portraits, rolls, readings,
                                                                            strict=True)]
        return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2))

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        from surrogate.runtime import BackendError

        raise BackendError("the photoreal backend has no reconstruction model")

    def close(self) -> None:
        if "_reader" in self.__dict__:
            self.__dict__.pop("_reader").close()
        if isinstance(self.renderer, TritonPortraitRenderer):
            self.renderer.close()
