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
   the step is clipped to what the generator can show without breaking the face. Each attribute's part of
   the edit then goes where it moves the person least (version 6, ``StyleRoutes``): the head's turn and tilt
   into the styles of the coarse layers only, each expression into the few style channels that carry it,
   gender and the brow through w;
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
PHOTOREAL_VERSION = 6  # bump when the edit, the framing or a model file changes the pixels
RENDER_SIDE = 256  # the backend's output; 64 and 128 are area-shrunk from it
WORK_SIDE = 512  # the portrait is rotated and framed at this size (as the portrait corpus is)
MODELS_DIR = Path(__file__).resolve().parent / "portrait_models"
DIRECTIONS_FILE = "directions.npz"
CALIBRATION_FILE = "photoreal_calibration.npz"  # an .npz: package data, like the other model files
STYLE_ROUTES_FILE = "style_routes.npz"  # version 6: where each attribute's part of the edit goes
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
STYLE_INPUT = "style"  # the network's w input
STYLE_OFFSET_INPUT = "style_offset"  # added to the style channels after the affine layers (version 6)


def synthesis_model(*, batch: int = -1, model_dir: str | None = None):
    """The graph that renders portraits: w and style offsets -> (N, 512, 512, 3) uint8 RGB portraits.

    The one definition of the heavy step (an ``ov.Model``): the embedded backend compiles it at its fixed
    batch, and ``surrogate export photoreal`` saves it with ``batch=-1`` (any batch) as the IR of the Triton
    entry ``SYNTHESIS_MODEL``, whose config.pbtxt is derived from this model's parameters and results. The
    pixels are quantised inside the graph, so both paths return the same uint8 array and a Triton reply
    carries 0.75 MB a portrait (the low band as float32 would be 3 MB, the 12 bands 12.6 MB). A zero offset
    gives the network's own pixels.
    """
    return HalfResolutionGenerator(model_dir=model_dir)._read(
        "SynthesisNetwork", STYLE_INPUT, batch, cut=lambda model: _portrait_graph(_with_style_offsets(model)))


@dataclass(frozen=True)
class StyleLayer:
    """One affine layer of the synthesis network: its style channels ``first:stop`` are ``weight @ w + bias``."""

    name: str
    weight: np.ndarray  # (channels, 512)
    bias: np.ndarray  # (channels,)
    first: int
    stop: int


def _constant(node) -> np.ndarray:
    """A Constant's data, looking through a Convert (compressed weights)."""
    while not hasattr(node, "get_data"):
        node = node.input_value(0).get_node()
    return np.asarray(node.get_data(), np.float32)


def _affine_layers(model) -> list[tuple[Any, Any]]:
    """(MatMul, bias Add) of each affine layer fed by the w input, coarse to fine (the IR's Gemm order)."""
    style = model.get_parameters()[0]  # the w input (an added offset input comes after it)
    matmuls = [t.get_node() for t in style.output(0).get_target_inputs() if t.get_node().get_type_name() == "MatMul"]
    if not matmuls:
        raise PortraitModelError("the portrait network is not the expected MobileStyleGAN (no affine layers)")
    matmuls.sort(key=lambda node: int(node.get_friendly_name().split("_")[1].split("/")[0]))
    return [(m, next(iter(m.output(0).get_target_inputs())).get_node()) for m in matmuls]


def style_layers(model) -> list[StyleLayer]:
    """The synthesis network's affine layers (6,752 style channels in all over its 23 layers)."""
    layers, start = [], 0
    for matmul, add in _affine_layers(model):
        weight = _constant(matmul.input_value(1).get_node())
        weight = weight if matmul.get_attributes().get("transpose_b", False) else weight.T
        layers.append(StyleLayer(matmul.get_friendly_name().split("/")[0], weight,
                                 _constant(add.input_value(1).get_node()).reshape(-1), start, start + len(weight)))
        start += len(weight)
    return layers


def _with_style_offsets(model):
    """The synthesis network with a second input, ``STYLE_OFFSET_INPUT`` (N, channels), added to its styles."""
    import openvino as ov
    import openvino.opset13 as ops

    layers = style_layers(model)
    batch = model.get_parameters()[0].get_partial_shape()[0]
    offset = ops.parameter(ov.PartialShape([batch, layers[-1].stop]), ov.Type.f32, name=STYLE_OFFSET_INPUT)
    offset.output(0).get_tensor().set_names({STYLE_OFFSET_INPUT})
    for layer, (_, add) in zip(layers, _affine_layers(model), strict=True):
        consumers = list(add.output(0).get_target_inputs())
        named = f"{STYLE_OFFSET_INPUT}/{layer.name}"  # named nodes: a saved IR must not differ from run to run
        piece = ops.slice(offset, ops.constant(np.array([layer.first]), name=f"{named}/first"),
                          ops.constant(np.array([layer.stop]), name=f"{named}/stop"),
                          ops.constant(np.array([1]), name=f"{named}/step"),
                          ops.constant(np.array([1]), name=f"{named}/axis"), name=f"{named}/slice")
        shifted = ops.add(add.output(0), piece, name=f"{named}/add")
        for consumer in consumers:
            consumer.replace_source_output(shifted.output(0))
    return ov.Model(model.get_results(), [*model.get_parameters(), offset], model.get_friendly_name())


# Version 6's routes (docs/photoreal.md, "Routed edits"): the head's turn and tilt in the styles of the coarse
# layers only; each expression on its top channels (largest against the channel's spread over natural
# portraits), scaled to about the effect of its step in w; gender, the brow (AU04) and anything else in w.
# Routed, the brow read less clearly (top 100 channels: r 0.839 at the 128 px default, target 0.85; in w 0.872).
ROUTED_POSE = ("yaw", "pitch")
POSE_LAYERS = (0, 7)
EXPRESSION_CHANNELS = {"AU05": (100, 3.0), "AU07": (10, 3.5), "AU12": (10, 3.5),
                       "AU23": (10, 3.5)}  # attribute: (top channels, scale)


@dataclass(frozen=True)
class StyleRoutes:
    """Per direction, the style offset of one read-out unit of its step (K, channels); a zero row: through w."""

    names: tuple[str, ...]
    offsets: np.ndarray

    @property
    def routed(self) -> np.ndarray:
        """(K,) bool: the directions whose steps go into the style offsets instead of w."""
        return np.any(self.offsets != 0, axis=1)

    @classmethod
    def load(cls, path: str | Path, names: tuple[str, ...]) -> StyleRoutes:
        with np.load(path) as data:
            stored = tuple(str(n) for n in data["names"])
            if stored != names:
                raise ValueError(f"{path}: routes for {stored}, but the directions are {names}")
            return cls(stored, np.asarray(data["offsets"], np.float32))

    def save(self, path: str | Path, **info: object) -> None:
        from surrogate.imageio import atomic_open

        with atomic_open(path) as handle:
            np.savez_compressed(handle, names=np.array(self.names), offsets=self.offsets,
                                info=np.array(json.dumps(info, default=str)))


def channel_spread(layers: list[StyleLayer], natural_w: np.ndarray) -> np.ndarray:
    """Each style channel's standard deviation over the portraits of ``natural_w`` (N, 512): (channels,)."""
    weight = np.concatenate([layer.weight for layer in layers]).astype(np.float64)  # the bias cancels
    return (np.asarray(natural_w, np.float64) @ weight.T).std(0) + 1e-6


def top_channels(style: np.ndarray, spread: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` channels a style change (channels,) moves most against their ``spread``, largest first."""
    return np.argsort(-np.abs(style) / spread, kind="stable")[:count]


def fit_style_routes(directions: AttributeDirections, layers: list[StyleLayer], natural_w: np.ndarray, *,
                     pose_layers: tuple[int, int] = POSE_LAYERS,
                     expressions: dict[str, tuple[int, float]] | None = None) -> StyleRoutes:
    """The routes of ``directions`` through ``layers``, channels ranked against their spread over ``natural_w``."""
    expressions = EXPRESSION_CHANNELS if expressions is None else expressions
    weight = np.concatenate([layer.weight for layer in layers])  # (channels, 512)
    spread = channel_spread(layers, natural_w)
    layer_of = np.concatenate([np.full(layer.stop - layer.first, i) for i, layer in enumerate(layers)])
    offsets = np.zeros((len(directions.names), len(weight)), np.float32)
    for k, (name, vector) in enumerate(zip(directions.names, directions.vectors, strict=True)):
        style = weight @ vector  # the styles' change per read-out unit (the bias cancels)
        if name in ROUTED_POSE:
            offsets[k] = style * ((layer_of >= pose_layers[0]) & (layer_of <= pose_layers[1]))
        elif name in expressions:
            count, scale = expressions[name]
            top = top_channels(style, spread, count)
            offsets[k, top] = style[top] * scale
    return StyleRoutes(directions.names, offsets)


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

    @cached_property
    def layers(self) -> list[StyleLayer]:
        """The synthesis network's affine layers (``style_layers``), read from its IR."""
        return style_layers(self._read("SynthesisNetwork", STYLE_INPUT, 1))

    @cached_property
    def channels(self) -> int:
        """How many style channels the offsets have (the width of ``STYLE_OFFSET_INPUT``)."""
        return int(self._synthesis.input(STYLE_OFFSET_INPUT).get_partial_shape()[1].get_length())

    def render(self, w: np.ndarray, side: int = FULL_SIDE // 2, offset: np.ndarray | None = None) -> np.ndarray:
        """Portraits for w (N, 512) and style offsets (N, channels; None: zero): (N, side, side, 3) uint8 RGB,
        side <= 512."""
        check_side(side)
        w = np.asarray(w, np.float32)
        offset = np.zeros((len(w), self.channels), np.float32) if offset is None else np.asarray(offset, np.float32)
        return shrink(self._run(self._synthesis, w, offset), side)


def check_side(side: int) -> None:
    if side > FULL_SIDE // 2:
        raise ValueError(f"the half-resolution path renders at most {FULL_SIDE // 2} px, not {side}")


def shrink(portraits: np.ndarray, side: int) -> np.ndarray:
    """(N, 512, 512, 3) uint8 portraits -> (N, side, side, 3) (area-averaged)."""
    if not len(portraits):
        return np.zeros((0, side, side, 3), np.uint8)
    return np.stack([downscale(p, side) for p in portraits])


class PortraitRenderer(Protocol):
    """Where the heavy step runs: w and style offsets -> (N, side, side, 3) uint8 RGB portraits, side <= 512."""

    def render(self, w: np.ndarray, side: int = FULL_SIDE // 2, offset: np.ndarray | None = None) -> np.ndarray: ...


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

    def input_shapes(self) -> dict[str, list[int]]:
        """The entry's inputs as the server reports them: name -> shape (-1: any)."""
        metadata = self._client.get_model_metadata(self.model, str(self.version))
        if self.protocol == "grpc":
            return {i.name: list(i.shape) for i in metadata.inputs}
        return {i["name"]: list(i["shape"]) for i in metadata["inputs"]}

    @cached_property
    def _channels(self) -> int:
        from surrogate.runtime import BackendError

        try:
            shapes = self.input_shapes()
        except Exception as exc:  # noqa: BLE001 - tritonclient raises several transport errors
            raise BackendError(f"Triton at {self.url} does not serve {self.model!r} v{self.version}: {exc}") from exc
        if set(shapes) != {STYLE_INPUT, STYLE_OFFSET_INPUT}:
            raise BackendError(f"Triton's {self.model!r} v{self.version} at {self.url} takes {sorted(shapes)}, not "
                               f"{[STYLE_INPUT, STYLE_OFFSET_INPUT]}: re-export it (surrogate export photoreal)")
        return int(shapes[STYLE_OFFSET_INPUT][-1])

    def render(self, w: np.ndarray, side: int = FULL_SIDE // 2, offset: np.ndarray | None = None) -> np.ndarray:
        from tritonclient.utils import np_to_triton_dtype

        from surrogate.runtime import BackendError

        check_side(side)
        w = np.ascontiguousarray(w, np.float32)
        offset = (np.zeros((len(w), self._channels), np.float32) if offset is None
                  else np.ascontiguousarray(offset, np.float32))
        parts = []
        deadline = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        for start in range(0, len(w), self.batch):
            tensors = []
            for name, array in ((STYLE_INPUT, w), (STYLE_OFFSET_INPUT, offset)):
                chunk = array[start:start + self.batch]
                tensors.append(self._module.InferInput(name, list(chunk.shape), np_to_triton_dtype(chunk.dtype)))
                tensors[-1].set_data_from_numpy(chunk)
            try:
                result = self._client.infer(self.model, tensors, model_version=str(self.version),
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
                 renderer: PortraitRenderer | None = None, edit_budget: float | None = EDIT_BUDGET,
                 routed: bool = True) -> None:
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
        routes_path = folder / STYLE_ROUTES_FILE
        # a folder without routes (a trial's, or versions 1-5's files) moves w along every direction
        self.routes = (StyleRoutes.load(routes_path, self.directions.names) if routed and routes_path.exists()
                       else None)
        self.schema = DEFAULT_SCHEMA
        self._columns = schema_columns(self.schema, self.directions.names)
        self._roll = self.schema.index("roll")
        self._yaw = self.directions.names.index("yaw")
        self._lock = threading.Lock()  # the MediaPipe reader is not shared between threads
        digest = hashlib.sha256()
        for path in (folder / DIRECTIONS_FILE, calibration_path, *([routes_path] if self.routes else [])):
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
             "refine": self.refine, "max_yaw": MAX_YAW, "edit_budget": edit_budget,
             "routed": [n for n, r in zip(self.directions.names, self.routes.routed, strict=True) if r]
             if self.routes else []},
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

    def steps(self, w0: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The read-out steps (N, K) that take w0 (N, 512) to ``targets`` along the directions (row by row),
        shortened together where the move in w would be longer than ``edit_budget``."""
        rows = [self._steps_row(w0[i:i + 1], targets[i:i + 1]) for i in range(len(w0))]
        return np.concatenate(rows) if rows else np.zeros((0, len(self.directions.names)), np.float32)

    def _steps_row(self, w0: np.ndarray, target: np.ndarray) -> np.ndarray:
        steps = (np.asarray(target, np.float32) - self.directions.predict(w0)).astype(np.float32)
        if self.edit_budget is None:
            return steps
        length = float(np.linalg.norm(steps @ self.directions.vectors))
        if length <= self.edit_budget:
            return steps
        return (steps * np.float32(self.edit_budget / length)).astype(np.float32)

    def edit(self, w0: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The edited w (N, 512) the read-out describes: w0 moved by all of ``steps`` along the directions."""
        steps = self.steps(w0, targets)
        rows = [w0[i:i + 1] + steps[i:i + 1] @ self.directions.vectors for i in range(len(w0))]
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, w0.shape[1]), np.float32)

    def render_inputs(self, w0: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """What the synthesis network is given for the edit to ``targets``: w (N, 512) moved by the steps that go
        through w, and the style offsets (N, channels) of the routed ones (None without routes)."""
        steps = self.steps(w0, targets)
        if self.routes is None:
            through_w, offsets = steps, None
        else:
            routed = self.routes.routed
            through_w = np.where(routed, np.float32(0), steps).astype(np.float32)
            offsets = np.concatenate([steps[i:i + 1] @ self.routes.offsets for i in range(len(steps))]
                                     ) if len(steps) else np.zeros((0, self.routes.offsets.shape[1]), np.float32)
        w = [w0[i:i + 1] + through_w[i:i + 1] @ self.directions.vectors for i in range(len(w0))]
        return (np.concatenate(w).astype(np.float32) if w else np.zeros((0, w0.shape[1]), np.float32)), offsets

    def latents(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The closed-form edited w (N, 512) the read-out describes: w0 from z alone, moved so that the reading
        should match (the routed steps reach the network as style offsets, ``render_inputs``)."""
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

    def rolled(self, w: np.ndarray, rolls: np.ndarray, offset: np.ndarray | None = None
               ) -> tuple[list[np.ndarray], list]:
        """Render w (N, 512) with style offsets (None: zero) at WORK_SIDE, rotate each by its roll and read it:
        (portraits, readings or None)."""
        from surrogate.portrait_corpus import rotate_frame

        # outside the lock: each render makes its own infer request, and a Triton call may wait in its queue
        rendered = self.renderer.render(w, side=WORK_SIDE, offset=offset)
        portraits = [rotate_frame(p, float(r)) for p, r in zip(rendered, rolls, strict=True)]
        with self._lock:  # one MediaPipe reader per backend
            return portraits, [self._reader.read(p) for p in portraits]

    def render_edit(self, w0: np.ndarray, targets: np.ndarray, rolls: np.ndarray) -> tuple[list[np.ndarray], list]:
        """The edit of w0 (N, 512) to ``targets`` rendered (``render_inputs``), rolled and read (``rolled``)."""
        w, offset = self.render_inputs(w0, targets)
        return self.rolled(w, rolls, offset)

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
        portraits, readings = self.render_edit(w0, targets, rolls)
        active = [i for i, reading in enumerate(readings) if reading is not None]
        for _ in range(self.refine):
            if not active:
                break
            for i in active:
                targets[i:i + 1] = self.corrected(targets[i:i + 1], requested[i:i + 1], w0[i:i + 1],
                                                  readings[i])
            again, reread = self.render_edit(w0[active], targets[active], rolls[active])
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
