"""The audit's configuration: one TOML file, every section optional, unknown keys are an error.

Why a file: the audit is a measurement that others must be able to rerun exactly, so everything that
changes a figure (sizes, seeds, model paths, thresholds) lives in a versioned config, not in flags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surrogate.configfile import build_dataclass, load_toml


class AuditConfigError(ValueError):
    """The config file is unreadable or names an unknown key / a value of the wrong type."""


@dataclass(frozen=True)
class SyntheticSection:
    dataset: str = ""  # existing `surrogate data synth` folder; empty: render one into OUT/synthetic
    identities: int = 40
    images_per_identity: int = 2  # the first image of each identity is the gallery, the second the probe
    size: int = 64
    seed: int = 1


@dataclass(frozen=True)
class RealSection:
    lfw: int = 100  # faces of skimage.data.lfw_subset() (0 = none)
    astronaut: bool = True  # skimage.data.astronaut(), one face


@dataclass(frozen=True)
class IdentitySection:
    dlib_size: int = 150  # side the faces are upscaled to before dlib detects and describes them
    ranks: tuple[int, ...] = (1, 5)
    blur_radius: float = 1.0  # the positive control's degradation
    jpeg_quality: int = 35
    noise_std: float = 6.0
    # Attribute-matched null: K nearest other faces (normalised attributes) per source; 0 = no null.
    null_neighbours: int = 5
    alpha: float = 0.05  # decision threshold of the exact one-sided tests (vs chance, vs the null)


@dataclass(frozen=True)
class MemorisationSection:
    training_dataset: str = ""  # the generator's training set (dataset folder); empty: the synthetic set
    samples: int = 200
    feature_size: int = 32  # images are compared as feature_size^2 grey vectors
    threshold_percentile: float = 1.0  # of the training set's own nearest-neighbour distances
    controls: int = 50  # near-copies of training images that must be flagged


@dataclass(frozen=True)
class FidelitySection:
    emotion: bool = True
    fer_model: str = ""  # .tflite path; empty: $SURROGATE_FER_MODEL or the cache of scripts/fetch_models.py


@dataclass(frozen=True)
class AuditConfig:
    out: str = "runs/audit"
    seed: int = 0  # base seed of the surrogates
    methods: tuple[str, ...] = ("3d", "gan")
    repository: str = ""  # model repository with gan_generator (empty: the synthesis default)
    estimator: str = ""  # recon checkpoint (.pt), model repository folder, "demo", or empty (none)
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)
    real: RealSection = field(default_factory=RealSection)
    identity: IdentitySection = field(default_factory=IdentitySection)
    memorisation: MemorisationSection = field(default_factory=MemorisationSection)
    fidelity: FidelitySection = field(default_factory=FidelitySection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> AuditConfig:
        path = Path(path)
        data = load_toml(path, AuditConfigError)
        # Every number in the audit is a size, count, seed or threshold, so negatives are typos.
        config = build_dataclass(cls, data.get("audit", data), str(path), AuditConfigError, non_negative=True)
        problem = config.problem()
        if problem:
            raise AuditConfigError(f"{path}: {problem}")
        base = path.resolve().parent
        return _resolve_paths(config, base)

    def problem(self) -> str | None:
        """Why the values cannot be used together (beyond types and signs), or None."""
        if not 0.0 < self.identity.alpha < 1.0:
            return f"identity.alpha must lie strictly between 0 and 1, got {self.identity.alpha}"
        if not self.identity.ranks or min(self.identity.ranks) < 1:
            return f"identity.ranks must be a non-empty list of ranks >= 1, got {list(self.identity.ranks)}"
        return None


def _resolve_paths(config: AuditConfig, base: Path) -> AuditConfig:
    """Relative paths in a config are relative to the repository root when the config lives in configs/."""
    root = base.parent.parent if base.parent.name == "configs" else base

    def fix(value: str) -> str:
        if not value or value == "demo" or Path(value).is_absolute():
            return value
        return str(root / value)

    from dataclasses import replace

    return replace(
        config,
        out=fix(config.out),
        repository=fix(config.repository),
        estimator=fix(config.estimator),
        synthetic=replace(config.synthetic, dataset=fix(config.synthetic.dataset)),
        memorisation=replace(config.memorisation, training_dataset=fix(config.memorisation.training_dataset)),
        fidelity=replace(config.fidelity, fer_model=fix(config.fidelity.fer_model)),
    )
