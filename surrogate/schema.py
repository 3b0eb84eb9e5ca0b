"""The attribute schema: the one definition of what a surrogate is conditioned on.

A surrogate face carries a private face's *attributes* and nothing else. This module says which
attributes exist, in which units, what range is valid, and how they are normalised to [0, 1] for the
networks. Every trained model stores its own schema (``AttributeSchema.to_json``) so a model trained
on another subset of OpenFace action units needs no code change.

Head-pose sign convention (degrees, the camera frame of OpenFace 2.x, converted from radians):
  * ``pitch`` > 0: the head tilts down (chin towards the chest);
  * ``yaw``   > 0: the nose turns towards the image's LEFT (the subject's own right);
  * ``roll``  > 0: the top of the head tilts towards the image's RIGHT (clockwise as seen).
A frontal face is (0, 0, 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SCHEMA_FORMAT_VERSION = 1

# Every action unit OpenFace 2.x estimates an intensity for (AUxx_r), with its FACS name.
OPENFACE_AU_NAMES: dict[str, str] = {
    "AU01": "inner brow raiser",
    "AU02": "outer brow raiser",
    "AU04": "brow lowerer",
    "AU05": "upper lid raiser",
    "AU06": "cheek raiser",
    "AU07": "lid tightener",
    "AU09": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU45": "blink",
}

PAPER_AUS: tuple[str, ...] = ("AU04", "AU05", "AU06", "AU07", "AU12", "AU23")
POSE_NAMES: tuple[str, ...] = ("yaw", "pitch", "roll")


class AttributeValidationError(ValueError):
    """Raised when attribute records are invalid; ``problems`` lists each one with row and field."""

    def __init__(self, problems: Sequence[AttributeProblem], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        shown = "; ".join(str(p) for p in self.problems[:10])
        more = f" (and {len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{len(self.problems)} invalid attribute value(s): {shown}{more}")


@dataclass(frozen=True)
class AttributeProblem:
    """One invalid value: which row (0-based, or None for a single record), which field, and why."""

    row: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}, " if self.row is not None else ""
        return f"{where}field '{self.field}': {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute: its unit, valid range, and the linear map to [0, 1] the networks see."""

    name: str
    unit: str
    low: float
    high: float
    description: str = ""

    def normalise(self, value: np.ndarray | float) -> np.ndarray | float:
        return (value - self.low) / (self.high - self.low)

    def denormalise(self, value: np.ndarray | float) -> np.ndarray | float:
        return value * (self.high - self.low) + self.low

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is invalid, or None if it is fine."""
        if isinstance(value, bool) or value is None:
            return f"expected a number, got {value!r}"
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return f"expected a number, got {value!r}"
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"expected a number, got {type(value).__name__}"
        if math.isnan(number):
            return "is NaN"
        if math.isinf(number):
            return "is infinite"
        if not (self.low <= number <= self.high):
            return f"{number:g} is outside the valid range [{self.low:g}, {self.high:g}] {self.unit}"
        return None


def pose_spec(name: str) -> AttributeSpec:
    limits = {"yaw": 60.0, "pitch": 45.0, "roll": 45.0}
    meaning = {
        "yaw": "head yaw; > 0 turns the nose towards the image's left (subject's right)",
        "pitch": "head pitch; > 0 tilts the head down",
        "roll": "head roll; > 0 tilts the top of the head towards the image's right",
    }
    return AttributeSpec(name, "degrees", -limits[name], limits[name], meaning[name])


def au_spec(name: str) -> AttributeSpec:
    if name not in OPENFACE_AU_NAMES:
        raise ValueError(f"unknown action unit {name!r}; known: {', '.join(OPENFACE_AU_NAMES)}")
    return AttributeSpec(name, "intensity", 0.0, 5.0, f"FACS {name} ({OPENFACE_AU_NAMES[name]}), 0-5")


GENDER_SPEC = AttributeSpec("gender", "probability", 0.0, 1.0, "probability that the face is male")


@dataclass(frozen=True)
class AttributeSchema:
    """An ordered set of attributes; the order is the column order of every attribute array."""

    attributes: tuple[AttributeSpec, ...]
    version: int = SCHEMA_FORMAT_VERSION
    _index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate attribute names in schema: {names}")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_names(cls, names: Iterable[str]) -> AttributeSchema:
        """Build a schema from attribute names: pose names, any OpenFace AU, and ``gender``."""
        specs = []
        for name in names:
            if name in POSE_NAMES:
                specs.append(pose_spec(name))
            elif name == "gender":
                specs.append(GENDER_SPEC)
            else:
                specs.append(au_spec(name))
        return cls(tuple(specs))

    @classmethod
    def default(cls) -> AttributeSchema:
        """The paper's ten attributes: head pose, six action units, gender."""
        return cls.from_names([*POSE_NAMES, *PAPER_AUS, "gender"])

    # -- introspection ------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def action_units(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n.startswith("AU"))

    def __len__(self) -> int:
        return len(self.attributes)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        return self._index[name]

    def spec(self, name: str) -> AttributeSpec:
        return self.attributes[self._index[name]]

    # -- normalisation ------------------------------------------------------------------------
    @property
    def lows(self) -> np.ndarray:
        return np.array([a.low for a in self.attributes], dtype=np.float32)

    @property
    def highs(self) -> np.ndarray:
        return np.array([a.high for a in self.attributes], dtype=np.float32)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """Natural units (N x A) -> [0, 1] (N x A), the form the networks see."""
        values = np.asarray(values, dtype=np.float32)
        return ((values - self.lows) / (self.highs - self.lows)).astype(np.float32)

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float32)
        return (values * (self.highs - self.lows) + self.lows).astype(np.float32)

    def clip(self, values: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(values, dtype=np.float32), self.lows, self.highs)

    # -- validation ---------------------------------------------------------------------------
    def validate_records(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        source: str = "",
        allow_extra: bool = False,
        first_row: int = 0,
    ) -> np.ndarray:
        """Check records (dicts of name -> value) and return them as an N x A float32 array.

        Every problem (missing, unknown, NaN/inf, out of range, wrong type) is collected and
        raised together in one ``AttributeValidationError`` naming row and field.
        """
        if isinstance(records, Mapping):
            records = [records]
        problems: list[AttributeProblem] = []
        out = np.zeros((len(records), len(self)), dtype=np.float32)
        for row, record in enumerate(records):
            row_no = row + first_row
            if not isinstance(record, Mapping):
                problems.append(AttributeProblem(row_no, "*", f"expected an object, got {type(record).__name__}"))
                continue
            for spec_i, spec in enumerate(self.attributes):
                if spec.name not in record:
                    problems.append(AttributeProblem(row_no, spec.name, "is missing"))
                    continue
                reason = spec.check(record[spec.name])
                if reason:
                    problems.append(AttributeProblem(row_no, spec.name, reason))
                else:
                    out[row, spec_i] = float(record[spec.name])
            if not allow_extra:
                for key in record:
                    if key not in self._index:
                        problems.append(
                            AttributeProblem(row_no, str(key), f"unknown attribute; expected {list(self.names)}")
                        )
        if problems:
            raise AttributeValidationError(problems, source)
        return out

    def validate_array(self, values: np.ndarray, *, source: str = "") -> np.ndarray:
        """Check an N x A array in natural units (shape, finiteness, range)."""
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != len(self):
            raise AttributeValidationError(
                [AttributeProblem(None, "attributes", f"expected shape (N, {len(self)}), got {values.shape}")],
                source,
            )
        records = [dict(zip(self.names, row.tolist(), strict=True)) for row in values]
        return self.validate_records(records, source=source)

    def to_records(self, values: np.ndarray) -> list[dict[str, float]]:
        return [dict(zip(self.names, map(float, row), strict=True)) for row in np.asarray(values)]

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.version,
            "pose_convention": "degrees; pitch>0 head down, yaw>0 nose to image left, roll>0 top to image right",
            "normalisation": "(value - low) / (high - low) -> [0, 1]",
            "attributes": [asdict(a) for a in self.attributes],
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributeSchema:
        try:
            specs = tuple(
                AttributeSpec(
                    name=str(a["name"]),
                    unit=str(a["unit"]),
                    low=float(a["low"]),
                    high=float(a["high"]),
                    description=str(a.get("description", "")),
                )
                for a in data["attributes"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an attribute schema: {exc}") from exc
        return cls(specs, version=int(data.get("format_version", SCHEMA_FORMAT_VERSION)))

    @classmethod
    def from_json(cls, text: str) -> AttributeSchema:
        return cls.from_dict(json.loads(text))


DEFAULT_SCHEMA = AttributeSchema.default()
