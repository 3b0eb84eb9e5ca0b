"""The private mapping: which crowd task token stands for which private face.

This file is the ONLY link between what the crowd sees (opaque tokens) and the private data (ids,
image files, attribute values, seeds). Publishing writes it outside the batch folder; the importer,
``transfer`` and ``report`` read it. Keep it with the private data, never with the crowd batch.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotation.question import Question
from surrogate.imageio import atomic_write_text
from surrogate.schema import AttributeSchema

MAPPING_FORMAT = "surrogate-faces/annotation-mapping"
MAPPING_VERSION = 1
METHODS: tuple[str, ...] = ("raw", "gan", "3d", "photoreal")
KIND_ITEM = "item"
KIND_GOLD = "gold"


class MappingError(ValueError):
    """A mapping file that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class MappingEntry:
    """One crowd task: a surrogate (or consented raw image) of one private face, or a gold item."""

    token: str
    kind: str  # "item" or "gold"
    method: str  # "raw", "gan", "3d" or "photoreal"
    attributes: tuple[float, ...]
    private_id: str | None = None  # None for gold items
    file: str | None = None  # the private image file, as the manifest gave it
    seed: int | None = None  # surrogate seed; None for raw images
    gold_label: str | None = None

    def to_dict(self, schema: AttributeSchema) -> dict[str, Any]:
        return {
            "token": self.token,
            "kind": self.kind,
            "method": self.method,
            "private_id": self.private_id,
            "file": self.file,
            "seed": self.seed,
            "gold_label": self.gold_label,
            "attributes": dict(zip(schema.names, self.attributes, strict=True)),
        }


@dataclass(frozen=True)
class Session:
    """One worker's sitting in the paper's design: a fixed set of tasks, in the order shown."""

    id: str  # opaque, random; published as the session's task / HIT input
    tokens: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tokens": list(self.tokens)}


@dataclass
class PrivateMapping:
    """Everything needed to bring crowd labels back to private ids, and to analyse them."""

    question: Question
    schema: AttributeSchema
    entries: list[MappingEntry]
    batch_seed: int = 0
    url_prefix: str = ""
    image_size: int | None = None
    sessions: list[Session] = field(default_factory=list)
    _by_token: dict[str, MappingEntry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_token = {}
        for entry in self.entries:
            if entry.token in self._by_token:
                raise MappingError(f"token {entry.token} appears twice in the mapping")
            if entry.method not in METHODS:
                raise MappingError(f"token {entry.token}: unknown method {entry.method!r}; known: {METHODS}")
            if entry.kind not in (KIND_ITEM, KIND_GOLD):
                raise MappingError(f"token {entry.token}: unknown kind {entry.kind!r}")
            self._by_token[entry.token] = entry
        for session in self.sessions:
            unknown = [t for t in session.tokens if t not in self._by_token]
            if unknown:
                raise MappingError(f"session {session.id}: unknown token(s) {unknown[:3]}")

    # -- lookup -----------------------------------------------------------------------------
    def __contains__(self, token: object) -> bool:
        return token in self._by_token

    def __getitem__(self, token: str) -> MappingEntry:
        return self._by_token[token]

    @property
    def tokens(self) -> list[str]:
        return [e.token for e in self.entries]

    @property
    def methods(self) -> list[str]:
        """Methods present, in the canonical order raw, gan, 3d."""
        present = {e.method for e in self.entries if e.kind == KIND_ITEM}
        return [m for m in METHODS if m in present]

    def items(self, methods: Iterable[str] | None = None) -> list[MappingEntry]:
        wanted = set(methods) if methods is not None else set(METHODS)
        return [e for e in self.entries if e.kind == KIND_ITEM and e.method in wanted]

    def gold(self) -> list[MappingEntry]:
        return [e for e in self.entries if e.kind == KIND_GOLD]

    def attribute(self, entry: MappingEntry, name: str) -> float:
        return entry.attributes[self.schema.index(name)]

    def frame(self) -> Any:
        """One row per task: token, kind, method, private_id, seed, gold_label, then the attributes."""
        import pandas as pd

        rows = []
        for e in self.entries:
            row = {
                "token": e.token,
                "kind": e.kind,
                "method": e.method,
                "private_id": e.private_id,
                "seed": e.seed,
                "gold_label": e.gold_label,
            }
            row.update(zip(self.schema.names, e.attributes, strict=True))
            rows.append(row)
        columns = ["token", "kind", "method", "private_id", "seed", "gold_label", *self.schema.names]
        return pd.DataFrame(rows, columns=columns)

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MAPPING_FORMAT,
            "version": MAPPING_VERSION,
            "warning": "PRIVATE: links crowd task tokens to private ids. Never share with the crowd.",
            "question": self.question.to_dict(),
            "schema": self.schema.to_dict(),
            "batch_seed": self.batch_seed,
            "url_prefix": self.url_prefix,
            "image_size": self.image_size,
            "entries": [e.to_dict(self.schema) for e in self.entries],
            "sessions": [s.to_dict() for s in self.sessions],
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "mapping") -> PrivateMapping:
        if not isinstance(data, dict) or data.get("format") != MAPPING_FORMAT:
            raise MappingError(f"{source}: not a private mapping written by 'surrogate annotate publish'")
        try:
            schema = AttributeSchema.from_dict(data["schema"])
            question = Question.from_dict(data["question"])
            entries = []
            for i, raw in enumerate(data["entries"]):
                attrs = raw["attributes"]
                missing = [n for n in schema.names if n not in attrs]
                if missing:
                    raise MappingError(f"{source}: entry {i} ({raw.get('token')}) lacks attributes {missing}")
                entries.append(
                    MappingEntry(
                        token=str(raw["token"]),
                        kind=str(raw["kind"]),
                        method=str(raw["method"]),
                        attributes=tuple(float(attrs[n]) for n in schema.names),
                        private_id=None if raw.get("private_id") is None else str(raw["private_id"]),
                        file=raw.get("file"),
                        seed=None if raw.get("seed") is None else int(raw["seed"]),
                        gold_label=raw.get("gold_label"),
                    )
                )
            sessions = [Session(str(x["id"]), tuple(str(t) for t in x["tokens"])) for x in data.get("sessions", [])]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, MappingError):
                raise
            raise MappingError(f"{source}: malformed mapping ({exc.__class__.__name__}: {exc})") from exc
        return cls(
            question=question,
            schema=schema,
            entries=entries,
            batch_seed=int(data.get("batch_seed", 0)),
            url_prefix=str(data.get("url_prefix", "")),
            image_size=data.get("image_size"),
            sessions=sessions,
        )

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> PrivateMapping:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise MappingError(f"{path}: cannot read mapping ({exc.strerror})") from exc
        except json.JSONDecodeError as exc:
            raise MappingError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from exc
        return cls.from_dict(data, source=str(path))


def task_url(url_prefix: str, token: str) -> str:
    """The address of a task image: ``url_prefix`` + ``<token>.png``.

    A prefix that does not end in ``/`` or ``=`` gets a ``/`` (so both ``https://host/batch`` and
    Label Studio's ``/data/local-files/?d=batch/images/`` style work).
    """
    if url_prefix and not url_prefix.endswith(("/", "=")):
        url_prefix += "/"
    return f"{url_prefix}{token}.png"


def check_unique(ids: Sequence[str], *, what: str = "id") -> None:
    duplicates = sorted(name for name, count in Counter(ids).items() if count > 1)
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (" ..." if len(duplicates) > 5 else "")
        raise MappingError(f"duplicate {what}s in the manifest: {shown}")
