"""Configuration of a reconstruction-network run: one dataclass per concern, loaded from TOML.

A run is fully described by its config file (plus ``--steps``/``--device`` overrides), and the resolved
config is stored in every checkpoint, so a model can be rebuilt and its training repeated exactly.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from surrogate.configfile import build_dataclass, load_toml
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 64
    channels: int = 1
    width: float = 1.0  # channel multiplier of the MobileNetV2-style trunk
    head_features: int = 256
    dropout: float = 0.1


@dataclass(frozen=True)
class DataConfig:
    """How training images are made. ``mode``: "stream" renders every batch fresh; "pool" keeps a
    ring buffer of rendered faces on the device and refreshes ``refresh`` of them per step (each face is
    then seen ~pool_size/refresh times, each time under a different on-device augmentation); "folder"
    reads labelled images (``path`` + ``attributes``, e.g. the portrait corpus) into device memory and
    holds out ``held_out_fraction`` of the rows (by row id) for evaluation. The rendering keys below do
    not apply to "folder", and the folder keys not to the rendered modes."""

    mode: str = "pool"
    path: str = ""  # folder mode: the image folder (``--data``)
    attributes: str = ""  # folder mode: attribute file in any adapter format ("" = PATH/attributes.csv)
    format: str = "auto"  # adapter format of ``attributes``
    min_confidence: float = 0.75  # rows below this confidence (formats that carry one) are rejected
    held_out_fraction: float = 0.1  # folder mode: share of rows kept out of training (decided per row id)
    flip_probability: float = 0.5  # folder mode: horizontal flips, attributes mirrored (yaw, roll)
    # folder mode: what the model card says about the data and the weights' licence ("" = the folder's path,
    # the project's licence); a dataset with its own terms must name them here
    description: str = ""
    licence: str = ""
    workers: int = 0  # DataLoader worker processes rendering faces (0 = render in the training process)
    chunk: int = 64  # faces rendered per worker task
    pool_size: int = 4096
    refresh: int = 64  # new faces per step in pool mode (a multiple of chunk)
    render_size: int = 0  # 0 = model.image_size
    # rendered modes: the 3-D face model drawing the faces, one of surrogate.synthesis_3d.FACE_MODELS
    # ("ict": the scanned ICT-FaceKit head; the identity head then learns its identity coefficients)
    face_model: str = "parametric"
    attribute_distribution: str = "coverage"  # "coverage" (whole valid range) or "synth" (surrogate.training_data's)
    neutral_au_probability: float = 0.3  # each AU is exactly 0 with this probability
    pose_uniform_fraction: float = 0.6  # rest of the poses ~ N(0, limits/3), clipped


@dataclass(frozen=True)
class AugmentConfig:
    """Domain randomisation. Scene randomisation happens in the renderer; the rest on the device."""

    scale_jitter: float = 0.12  # face size x U(1 - j, 1 + j) (in the renderer; on the device in folder mode)
    shift_jitter: float = 0.06  # translation, fraction of the image (likewise)
    light_azimuth: tuple[float, float] = (-70.0, 70.0)
    light_elevation: tuple[float, float] = (-15.0, 60.0)
    light_strength: tuple[float, float] = (0.25, 1.0)
    ambient: tuple[float, float] = (0.15, 0.65)
    skin: tuple[float, float] = (0.05, 0.95)
    background_probability: float = 0.8  # textured background instead of the renderer's plain one
    contrast: tuple[float, float] = (0.6, 1.4)
    brightness: float = 0.2  # additive, in [-1, 1] pixel units
    gamma: tuple[float, float] = (0.7, 1.4)
    blur_probability: float = 0.2
    lowres_probability: float = 0.15  # down- then up-sample (LFW-like 25 px faces)
    noise_std: tuple[float, float] = (0.0, 0.06)
    occluder_probability: float = 0.25
    occluder_size: tuple[float, float] = (0.12, 0.4)  # side, fraction of the image


@dataclass(frozen=True)
class LossConfig:
    pose: float = 4.0
    aus: float = 6.0  # AUs are small, local changes at 64 px: they need the largest weight
    gender: float = 1.0
    identity: float = 0.1
    lighting: float = 0.25


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True
    compile: bool = False
    log_every: int = 50
    checkpoint_every: int = 1000
    sample_every: int = 1000
    eval_every: int = 1000
    eval_size: int = 512
    threads: int = 0  # torch CPU threads; 0 = torch's default
    # Start from the weights of an earlier run (last.pt or model.pt of the same architecture): fine-tuning
    # after a renderer change or on new data. Optimiser and schedule start fresh; "" = random init.
    init_from: str = ""


@dataclass(frozen=True)
class ReconConfig:
    name: str = "recon"
    out_dir: str = "runs/recon"
    attributes: tuple[str, ...] = DEFAULT_SCHEMA.names
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def schema(self) -> AttributeSchema:
        return AttributeSchema.from_names(self.attributes)

    @property
    def render_size(self) -> int:
        return self.data.render_size or self.model.image_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, *, steps: int | None = None, device: str | None = None,
                       out_dir: str | None = None, data_path: str | None = None,
                       attributes: str | None = None, batch_size: int | None = None) -> ReconConfig:
        """The config with command-line overrides; a data folder switches to folder mode."""
        train, data = self.train, self.data
        if steps is not None:
            train = replace(train, steps=steps)
        if device is not None:
            train = replace(train, device=device)
        if batch_size is not None:
            train = replace(train, batch_size=batch_size)
        if data_path is not None:
            data = replace(data, mode="folder", path=data_path)
        if attributes is not None:
            data = replace(data, attributes=attributes)
        return replace(self, train=train, data=data, out_dir=out_dir if out_dir is not None else self.out_dir)

    def check(self) -> None:
        """Reject values that would fail later, with the key that is wrong."""
        problems = []
        if self.data.mode not in ("stream", "pool", "folder"):
            problems.append(f"data.mode must be 'stream', 'pool' or 'folder', not {self.data.mode!r}")
        if not 0.0 <= self.data.held_out_fraction < 1.0:
            problems.append(f"data.held_out_fraction must be in [0, 1), not {self.data.held_out_fraction}")
        if not 0.0 <= self.data.flip_probability <= 1.0:
            problems.append(f"data.flip_probability must be in [0, 1], not {self.data.flip_probability}")
        from surrogate.synthesis_3d import FACE_MODELS

        if self.data.face_model not in FACE_MODELS:
            problems.append(f"data.face_model must be one of {', '.join(FACE_MODELS)}, not {self.data.face_model!r}")
        if self.data.attribute_distribution not in ("coverage", "synth"):
            problems.append("data.attribute_distribution must be 'coverage' or 'synth'")
        pool_ok = self.data.refresh % self.data.chunk == 0 and self.data.pool_size >= self.train.batch_size
        if self.data.mode == "pool" and not pool_ok:
            problems.append("data.refresh must be a multiple of data.chunk and data.pool_size >= train.batch_size")
        if self.model.channels not in (1, 3):
            problems.append(f"model.channels must be 1 or 3, not {self.model.channels}")
        if self.model.image_size % 16 or self.model.image_size < 32:
            problems.append(f"model.image_size must be a multiple of 16 and >= 32, not {self.model.image_size}")
        if self.train.device not in ("auto", "cpu", "cuda"):
            problems.append(f"train.device must be auto, cpu or cuda, not {self.train.device!r}")
        for name, value in (("train.steps", self.train.steps), ("train.batch_size", self.train.batch_size)):
            if value < 1:
                problems.append(f"{name} must be >= 1, not {value}")
        try:
            self.schema  # noqa: B018 - validates the attribute names
        except ValueError as exc:
            problems.append(f"attributes: {exc}")
        if problems:
            raise ConfigError("; ".join(problems))


def config_from_dict(data: dict[str, Any], where: str = "config") -> ReconConfig:
    config = build_dataclass(ReconConfig, data, where, ConfigError)
    config.check()
    return config


def load_config(path: str | Path) -> ReconConfig:
    path = Path(path)
    data = load_toml(path, ConfigError)
    try:
        return config_from_dict(data, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if not str(exc).startswith(str(path)) else str(exc)) from exc
