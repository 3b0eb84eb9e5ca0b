"""Training configuration of the conditional BEGAN-CS: dataclasses loaded from TOML files.

One config file fully describes a run (data, network shape, losses, optimiser, schedule, device), so a
run is reproducible from its file and seed; the resolved config is also stored in every checkpoint.
Defaults follow the paper (alpha = 0.5, gamma = 0.1, Adam lr 1e-4, beta1 0.5, z ~ U(-1, 1)^64); the
upstream BEGAN-CS values (alpha = 0.1, gamma = 0.5, L2 reconstruction) are ``--set`` overrides of
``configs/gan/paper.toml`` (its header has the command).
"""

from __future__ import annotations

import math
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from surrogate.configfile import build_dataclass, load_toml


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    path: str = ""  # synthetic dataset folder, or folder of images
    attributes: str = ""  # attribute file (any adapter format) when ``path`` is an image folder
    format: str = "auto"  # adapter format of ``attributes``
    min_confidence: float = 0.75  # OpenFace rows below this confidence are rejected by the adapter
    held_out_fraction: float = 0.1  # share of identities (or rows) kept out of training for evaluation
    limit: int = 0  # use at most this many training rows (0 = all); for quick experiments


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 64  # 16, 32, 64 or 128
    channels: int = 1  # 1 grayscale, 3 RGB
    n: int = 64  # conv filters (BEGAN's "n")
    z_dim: int = 64  # generator noise dimension
    # Discriminator bottleneck (BEGAN's "h"). L_C ties its first z_dim entries to z; extra entries (e.g.
    # z_dim + number of attributes) leave the encoder room to carry y for the auxiliary predictor.
    latent_dim: int = 64
    aux_hidden: int = 128  # hidden width of the 2-layer auxiliary label predictor
    skip: bool = False  # BEGAN skip connections (upsampled h0 into every decoder stage)
    output_activation: str = "none"  # "none" (BEGAN) or "tanh"


@dataclass(frozen=True)
class LossConfig:
    recon: str = "l1"  # L(v) = mean |v - D(v)| ("l1") or mean (v - D(v))^2 ("l2", upstream)
    alpha: float = 0.5  # weight of the BEGAN-CS constraint loss L_C (paper 0.5, upstream 0.1)
    gamma: float = 0.1  # equilibrium ratio (paper 0.1, upstream 0.5)
    lambda_k: float = 0.001  # k_t learning rate
    k_init: float = 0.0
    label_weight_d: float = 1.0  # weight of MSE(y, y_hat(x)) in L_D (paper: 1)
    label_weight_g: float = 1.0  # weight of MSE(y, y_hat(G(z|y))) in L_G (paper: 1)
    # Weight each attribute's squared error by 1 / its variance in the training labels (mean weight 1).
    # Pose spans a small part of its normalised range in real-looking data, so a plain MSE barely
    # notices a generator that ignores head pose; standardising gives every attribute equal say.
    label_standardise: bool = False
    # Gaussian sigma (pixels) of the blur applied to real and generated images on the label path only
    # (0 = the paper: y_hat from the same encoder pass as the reconstruction). A generator can satisfy
    # a weak auxiliary predictor with high-frequency patterns no other estimator reads as the attribute
    # (docs/gan.md); pose, smile and brows survive a 1-2 px blur, such patterns do not. Costs one extra
    # encoder pass on the reals and one on the fakes per step.
    label_blur: float = 0.0
    # Weight of MSGAN's mode-seeking term in L_G (0 = the paper). Not in the paper: every BEGAN-CS run
    # here lost diversity as its attribute fidelity rose (docs/gan.md, findings 5 and 10). Half of each
    # batch of fakes repeats the other half's attributes with new z, and the generator is rewarded for
    # making the pairs differ. The distance is taken on images blurred by label_blur (when set) and with
    # each image's mean removed, so neither pixel noise nor overall brightness can buy it. 0.005 took v4's
    # lineage from diversity 0.06 to 0.50 (gan_generator v5) in 9,500 H100 steps; 0.015 went further and cost
    # yaw and gender.
    mode_seeking: float = 0.0
    # Per-attribute multipliers of the G label loss, "NAME=FACTOR[,NAME=FACTOR...]" (";" also separates,
    # for scripts/train_defaults.sh's GAN_VARIANTS, which splits on commas; empty = none): raise
    # one attribute's say without raising every label's (label_weight_g does that, and with the
    # mode-seeking term on it moves which attribute z takes over: docs/gan.md, stages 7-8). D's label loss
    # is left alone: the teacher reads every attribute as before. Names are checked against the data.
    label_boost_g: str = ""

    def label_boosts(self) -> dict[str, float]:
        """``label_boost_g`` parsed: attribute name -> factor (ConfigError naming the key when malformed)."""
        boosts: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in self.label_boost_g.replace(";", ",").split(","))):
            name, sep, factor = item.partition("=")
            try:
                value = float(factor)
            except ValueError:
                value = math.nan
            if not sep or not name.strip() or not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"loss.label_boost_g must look like 'AU06=2.0,gender=1.5' (positive factors), got {item!r}"
                )
            boosts[name.strip()] = value
        return boosts


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = 16
    lr: float = 1e-4  # both networks (paper)
    lr_d: float = 0.0  # 0 = same as lr
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_every: int = 0  # halve lr every this many steps (0 = never; upstream BEGAN-CS: never)
    lr_floor: float = 2e-5


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    seed: int = 0
    out_dir: str = "runs/gan"
    device: str = "cpu"  # cpu | cuda
    checkpoint_every: int = 1000
    # Keep a weights-only generator snapshot (snapshots/generator-STEP.pt, a few MB, loadable by
    # `evaluate gan` and `export gan`) every this many steps, so the best step can be picked afterwards
    # by the independent estimator (M_global does not track attribute fidelity); 0 = off.
    snapshot_every: int = 0
    # Warn when k_t has been 0 for this many steps (0 = never): the discriminator has stopped pushing fakes
    # away, and in every run so far the generator then collapsed (docs/gan.md, findings 1 and 5).
    k_zero_warning_steps: int = 2000
    # Half-life, in thousands of training images, of an exponential moving average of the generator's
    # weights (0 = off). Snapshots, sample grids, evaluation and export use the averaged generator: BEGAN's
    # generator oscillates around the equilibrium, and single snapshots of one run differed by up to
    # 0.3 in AU06's r from one thousand steps to the next, while a plain average of six of them raised the
    # mean r from 0.44 to 0.52 (docs/gan.md, finding 7). StyleGAN2-ADA's G_ema, same rampup.
    ema_kimg: float = 0.0
    # Early in a run the half-life is capped at this share of the images seen so far, so the average does
    # not keep the random initial weights for long (StyleGAN2-ADA's ema_rampup).
    ema_rampup: float = 0.05
    sample_every: int = 1000
    log_every: int = 50
    amp: bool = True  # CUDA: bf16 autocast + TF32
    channels_last: bool = True  # CUDA, and CPU when cpu_bf16
    cpu_bf16: bool = False  # CPU: bf16 autocast + channels_last (~1.75x faster on these CPUs)
    num_threads: int = 0  # torch CPU threads (0 = torch default)
    probe_count: int = 8  # attribute vectors in the sample grid (rows)
    probe_z: int = 8  # noise vectors in the sample grid (columns)
    sweep_steps: int = 7  # columns of the attribute-sweep grid


@dataclass(frozen=True)
class GanConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        """The resolved config as TOML (what ``--dry-run`` prints; loadable again)."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
            lines.append("")
        return "\n".join(lines)

    def validate(self) -> GanConfig:
        m, loss, o, t = self.model, self.loss, self.optim, self.train
        problems = []
        if m.image_size not in (16, 32, 64, 128):
            problems.append(f"model.image_size must be 16, 32, 64 or 128, got {m.image_size}")
        if m.channels not in (1, 3):
            problems.append(f"model.channels must be 1 or 3, got {m.channels}")
        if m.latent_dim < m.z_dim:
            problems.append(f"model.latent_dim ({m.latent_dim}) must be at least model.z_dim ({m.z_dim}) for L_C")
        if m.output_activation not in ("none", "tanh"):
            problems.append(f"model.output_activation must be 'none' or 'tanh', got {m.output_activation!r}")
        if loss.recon not in ("l1", "l2"):
            problems.append(f"loss.recon must be 'l1' or 'l2', got {loss.recon!r}")
        if loss.mode_seeking < 0:
            problems.append(f"loss.mode_seeking must be 0 (off) or positive, got {loss.mode_seeking}")
        if loss.mode_seeking > 0 and o.batch_size % 2:
            problems.append(
                f"loss.mode_seeking pairs the fakes of a batch: optim.batch_size must be even, got {o.batch_size}"
            )
        try:
            loss.label_boosts()
        except ConfigError as exc:
            problems.append(str(exc))
        if not 0.0 <= loss.label_blur <= 8.0:
            problems.append(f"loss.label_blur must be a blur sigma in pixels in [0, 8], got {loss.label_blur}")
        if t.device not in ("cpu", "cuda"):
            problems.append(f"train.device must be 'cpu' or 'cuda', got {t.device!r}")
        if not 0.0 <= self.data.held_out_fraction < 1.0:
            problems.append(f"data.held_out_fraction must be in [0, 1), got {self.data.held_out_fraction}")
        for name, value in (
            ("model.n", m.n),
            ("optim.batch_size", o.batch_size),
            ("train.steps", t.steps),
            ("train.checkpoint_every", t.checkpoint_every),
            ("train.log_every", t.log_every),
            ("train.sample_every", t.sample_every),
        ):
            if value <= 0:
                problems.append(f"{name} must be positive, got {value}")
        if o.lr <= 0:
            problems.append(f"optim.lr must be positive, got {o.lr}")
        if t.k_zero_warning_steps < 0:
            problems.append(f"train.k_zero_warning_steps must be 0 (off) or positive, got {t.k_zero_warning_steps}")
        if t.ema_kimg < 0 or t.ema_rampup < 0:
            problems.append(
                f"train.ema_kimg and train.ema_rampup must be 0 (off) or positive, got {t.ema_kimg}, {t.ema_rampup}"
            )
        if t.snapshot_every < 0:
            problems.append(f"train.snapshot_every must be 0 (off) or positive, got {t.snapshot_every}")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> GanConfig:
    """Load a TOML config (missing keys take the paper defaults) and apply dotted overrides.

    Relative ``data.path``/``data.attributes`` stay relative to the working directory, like every other
    path given on the command line.
    """
    raw: dict[str, Any] = load_toml(path, ConfigError) if path is not None else {}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override '{dotted}' must be section.key")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table, got {table!r}")
        table[key] = value
    where = str(path) if path is not None else ""
    if overrides:
        where = f"{where} with overrides" if where else "overrides"
    return build_dataclass(GanConfig, raw, where, ConfigError).validate()


def config_from_dict(data: dict[str, Any]) -> GanConfig:
    """Rebuild a config stored in a checkpoint. Keys this version does not know (a section or a key added
    by a newer version, e.g. ``train.ema_kimg``) are dropped, so an older checkout can still load, evaluate
    and export a newer run's generator."""
    section_types = typing.get_type_hints(GanConfig)  # section name -> its dataclass
    kept: dict[str, Any] = {}
    for section, values in data.items():
        if section in section_types:
            known = {f.name for f in fields(section_types[section])}
            kept[section] = {k: v for k, v in values.items() if k in known} if isinstance(values, dict) else values
    return build_dataclass(GanConfig, kept, "checkpoint config", ConfigError)


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` with the value parsed as TOML (so numbers/bools/strings keep their type)."""
    dotted, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return dotted.strip(), parsed


__all__ = [
    "ConfigError",
    "DataConfig",
    "GanConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "parse_override",
    "replace",
]
