"""Read real face-analysis tools' outputs into the attribute schema.

Researchers run OpenFace 2.x, py-feat or LibreFace on their private faces (or write our own canonical
CSV/JSON); this module turns those files into one ``AttributeTable`` in schema order and natural units.
The guiding rule: a row the tool failed on (no face, tracking lost, low confidence, NaN or empty values,
values out of range) is reported with its row number, id and reason and EXCLUDED. Tools write zeros
when they fail, and a zero-AU, frontal row looks exactly like a calm frontal face: using it would
label a surrogate of a neutral face with the private face's label.

Row ids (what the annotation step uses to put crowd labels back on the private images):
  * OpenFace video (FeatureExtraction / FaceLandmarkVidMulti): ``<stem>_f<frame>``, plus
    ``_face<face_id>`` when a ``face_id`` column exists and the id is not 0. ``<stem>`` is the CSV's
    file stem (OpenFace names its CSV after the video) unless ``id_prefix`` is given.
  * OpenFace image (FaceLandmarkImg, header ``face, confidence``): ``<stem>``, plus ``_face<face>``
    for the second and later faces (face index > 0).
  * py-feat: the stem of the ``input`` column (``<stem>_f<frame>`` when ``input`` is a video), plus
    ``_face<k>`` for the k-th (k >= 1) further face found in the same image/frame.
  * LibreFace: video CSV ``<stem>_f<frame_idx>``; image CSV the stem of ``input_image_path``.
  * canonical CSV / JSON: the ``id`` field, else the stem of ``file``.
Row numbers (``RejectedRow.row``) are 1-based data rows: row 1 is the first record after the header
(spreadsheet line 2), or the first element of a JSON list.

See docs/attributes.md for each format, its sign conventions and the missing-attribute policy.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from surrogate.imageio import atomic_open
from surrogate.schema import DEFAULT_SCHEMA, POSE_NAMES, AttributeProblem, AttributeSchema

FORMATS: tuple[str, ...] = ("openface", "pyfeat", "libreface", "canonical", "json")
AU_SCALES: tuple[str, ...] = ("auto", "probability", "intensity")

# Filled when the source has no column for the attribute. Only values that encode "no information"
# belong here: P(male) = 0.5 is exactly "unknown". An AU intensity has no such value (0 asserts that
# the muscle is relaxed), so missing AUs are never filled unless the caller says so explicitly.
DEFAULT_FILL: dict[str, float] = {"gender": 0.5}

DEFAULT_MIN_CONFIDENCE = 0.75
DEFAULT_CLIP_TOLERANCE = 0.01  # fraction of an attribute's range clipped back silently-but-noted

_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".m4v", ".flv"}
_OPENFACE_AU_RE = re.compile(r"^AU\d\d_r$")
_PYFEAT_AU_RE = re.compile(r"^AU\d\d$")
_LIBREFACE_AU_RE = re.compile(r"^au_\d+_intensity$")

# Reason kinds, the keys of the conversion summary.
KIND_TRACKING = "tracking failed"
KIND_NO_FACE = "no face"
KIND_CONFIDENCE = "low confidence"
KIND_MISSING = "missing value"
KIND_INVALID = "invalid value"
KIND_RANGE = "out of range"
KIND_MALFORMED = "malformed row"
KIND_DUPLICATE = "duplicate id"


@dataclass(frozen=True)
class InMemoryFile:
    """An attribute file held in memory, e.g. an HTTP upload: the service parses uploads without ever
    writing them to disk. Read like a path; ``name`` gives the OpenFace id stem and error messages."""

    name: str
    data: bytes

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def __str__(self) -> str:
        return self.name

    def is_file(self) -> bool:
        return True

    def exists(self) -> bool:
        return True

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.data.decode(encoding)


Source = Path | InMemoryFile


def _open_text(source: Source) -> io.TextIOBase:
    """Open a path or an in-memory file as UTF-8 text (BOM stripped, newlines untranslated)."""
    if isinstance(source, InMemoryFile):
        return io.TextIOWrapper(io.BytesIO(source.data), encoding="utf-8-sig", newline="")
    return open(source, encoding="utf-8-sig", newline="")


class AttributeFileError(ValueError):
    """The file as a whole cannot be read as attributes: unreadable, wrong format, missing column."""

    def __init__(self, path: str | os.PathLike[str] | InMemoryFile, message: str, *,
                 column: str | None = None) -> None:
        self.path = str(path)
        self.column = column
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class RejectedRow:
    """A source row that was excluded, and why (``kind`` groups reasons for the summary)."""

    row: int
    id: str
    reason: str
    kind: str = KIND_INVALID


@dataclass(frozen=True)
class RowNote:
    """Something done to an accepted row that a reviewer should be able to see (e.g. a clip)."""

    row: int
    id: str
    note: str


@dataclass
class AttributeTable:
    """Valid rows of one attribute file, in schema order and natural units."""

    schema: AttributeSchema
    ids: list[str]
    files: list[str | None]
    values: np.ndarray  # (N, A) float32
    rejected: list[RejectedRow]
    source_format: str
    rows: list[int] = field(default_factory=list)  # source row number of each accepted row
    rows_read: int = 0
    notes: list[str] = field(default_factory=list)  # file-level decisions (detected format, fills)
    adjustments: list[RowNote] = field(default_factory=list)  # per-row clips
    filled: dict[str, float] = field(default_factory=dict)  # attribute -> constant the source lacked

    def __len__(self) -> int:
        return len(self.ids)

    def rejected_by_kind(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.rejected).most_common())

    def records(self) -> list[dict[str, Any]]:
        """One dict per row: id, file and every attribute (the JSON form)."""
        return [
            {"id": i, "file": f, **dict(zip(self.schema.names, map(float, row), strict=True))}
            for i, f, row in zip(self.ids, self.files, self.values, strict=True)
        ]


# ---------------------------------------------------------------------------------------------
# Raw columns: what every format reader produces before the shared checks.
# ---------------------------------------------------------------------------------------------
@dataclass
class _Column:
    """One source column parsed to float64; ``raw`` keeps the text of unparsable cells for messages."""

    name: str
    values: np.ndarray
    bad: dict[int, Any]  # row index -> raw cell that is not a number (or is empty)


@dataclass
class _Raw:
    """What a format reader hands to the shared finaliser."""

    path: Source
    source_format: str
    row_numbers: list[int]
    ids: list[str]
    files: list[str | None]
    attributes: dict[str, tuple[_Column, Callable[[np.ndarray], np.ndarray]]]  # name -> column, unit map
    status: list[tuple[np.ndarray, Callable[[int], str], str]] = field(default_factory=list)
    row_errors: dict[int, RejectedRow] = field(default_factory=dict)  # index -> early rejection
    notes: list[str] = field(default_factory=list)


def _parse_column(name: str, cells: Sequence[Any], *, strict_types: bool = False) -> _Column:
    """Strings/numbers -> float64 quickly; cells that are not numbers become NaN and are remembered.

    ``strict_types`` (JSON) refuses None and booleans, which numpy would quietly turn into NaN / 1.0.
    """
    try:
        if strict_types:
            raise TypeError
        values = np.asarray(cells, dtype=np.float64) if cells else np.zeros(0)
        bad: dict[int, Any] = {}
    except (TypeError, ValueError):
        values = np.empty(len(cells), dtype=np.float64)
        bad = {}
        for i, cell in enumerate(cells):
            try:
                if isinstance(cell, bool) or cell is None:
                    raise TypeError
                values[i] = float(cell)
            except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float's range
                values[i] = np.nan
                bad[i] = cell
    if values.ndim != 1:
        raise ValueError(f"column {name} is not a list of scalars")
    return _Column(name, values, bad)


class _Absent:
    """A JSON record without the key (reported as 'is missing', unlike an explicit null)."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _identity(x: np.ndarray) -> np.ndarray:
    return x


# ---------------------------------------------------------------------------------------------
# CSV reading: BOM, CRLF, leading spaces in names, pandas' unnamed index column, tab/semicolon.
# ---------------------------------------------------------------------------------------------
class _Header:
    """Header names stripped of whitespace; exact lookup first, then a unique case-insensitive one."""

    def __init__(self, path: Source, names: Sequence[str]) -> None:
        self.path = path
        self.names = [n.strip() for n in names]
        self._exact: dict[str, list[int]] = {}
        self._folded: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            self._exact.setdefault(n, []).append(i)
            self._folded.setdefault(n.casefold(), []).append(i)
        self.folded = set(self._folded)

    def find(self, name: str) -> int | None:
        hits = self._exact.get(name) or self._folded.get(name.casefold())
        if not hits:
            return None
        if len(hits) > 1:
            raise AttributeFileError(self.path, f"column '{name}' appears {len(hits)} times in the header",
                                     column=name)
        return hits[0]

    def require(self, name: str, why: str) -> int:
        index = self.find(name)
        if index is None:
            raise AttributeFileError(self.path, f"missing column '{name}' ({why})", column=name)
        return index


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", "\t", ";")}
    return max(counts, key=lambda d: (counts[d], d == ","))


def _records(lines: Iterable[str], delimiter: str) -> Iterable[list[str]]:
    """Split CSV records; plain lines (no quote) take the fast ``str.split`` path, 3x faster than csv.

    A line with a quote is handed to the csv module, joined with the following lines while its quotes
    are unbalanced (a quoted field that spans lines).
    """
    pending = ""
    for line in lines:
        if pending or '"' in line:
            pending += line
            if pending.count('"') % 2:
                continue
            yield next(csv.reader([pending], delimiter=delimiter))
            pending = ""
        else:
            yield line.rstrip("\r\n").split(delimiter)
    if pending:
        raise csv.Error("unexpected end of file inside a quoted field")


def _read_csv(path: Source, wanted: Callable[[_Header], dict[str, int]]) -> tuple[_Header, dict[str, list[str]],
                                                                               list[int], list[RejectedRow]]:
    """Stream a CSV once and keep only the wanted columns (a 700-column OpenFace file stays cheap).

    Returns the header, the wanted cells by key, the data row number of each kept row, and rows
    rejected as malformed (too few fields).
    """
    try:
        with _open_text(path) as handle:
            first = handle.readline()
            if not first.strip():
                raise AttributeFileError(path, "empty file (no header line)")
            delimiter = _sniff_delimiter(first)
            header = _Header(path, next(csv.reader([first], delimiter=delimiter)))
            columns = wanted(header)
            keys = list(columns)
            indices = [columns[k] for k in keys]
            needed = max(indices) + 1 if indices else 0
            pick = itemgetter(*indices, needed - 1) if indices else (lambda fields: ())
            selected: list[tuple[str, ...]] = []
            row_numbers: list[int] = []
            malformed: list[RejectedRow] = []
            for row_no, fields in enumerate(_records(handle, delimiter), start=1):
                if (len(fields) < needed or len(fields) == 1) and not any(f.strip() for f in fields):
                    continue  # blank line (e.g. a trailing empty line)
                if len(fields) < needed:
                    malformed.append(RejectedRow(row_no, "", f"row has {len(fields)} fields but the header "
                                                 f"has {len(header.names)}", KIND_MALFORMED))
                    continue
                row_numbers.append(row_no)
                selected.append(pick(fields))
    except UnicodeDecodeError as exc:
        raise AttributeFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise AttributeFileError(path, f"not a readable CSV file ({exc})") from exc
    except OSError as exc:
        raise AttributeFileError(path, f"cannot read ({exc.strerror or exc})") from exc
    by_column = list(zip(*selected, strict=True)) if selected else [() for _ in range(len(keys) + 1)]
    cells = {k: list(by_column[j]) for j, k in enumerate(keys)}
    return header, cells, row_numbers, malformed


def _strip_cells(cells: list[str]) -> list[str]:
    return [c.strip() for c in cells]


def _int_text(cell: str) -> str:
    """'12', '12.0', ' 12' -> '12' (OpenFace and pandas write frame numbers either way)."""
    cell = cell.strip()
    try:
        number = float(cell)
    except ValueError:
        return cell
    return str(int(number)) if math.isfinite(number) and number == int(number) else cell


def _stem(path_text: str) -> str:
    """File stem of a path written on any OS (py-feat/LibreFace on Windows write backslashes)."""
    path_text = path_text.strip()
    pure: PurePath = PureWindowsPath(path_text) if "\\" in path_text else PurePath(path_text)
    return pure.stem if pure.suffix else pure.name


def _is_video(path_text: str) -> bool:
    pure: PurePath = PureWindowsPath(path_text) if "\\" in path_text else PurePath(path_text)
    return pure.suffix.lower() in _VIDEO_SUFFIXES


def _with_face_suffix(keys: list[str]) -> list[str]:
    """Second and later occurrences of a key get ``_face1``, ``_face2``, ... (several faces per image)."""
    seen: Counter[str] = Counter()
    out = []
    for key in keys:
        k = seen[key]
        seen[key] += 1
        out.append(key if k == 0 else f"{key}_face{k}")
    return out


class _MissingColumns:
    """Collects schema attributes without a source column, to name them all in one error."""

    def __init__(self, path: Source, tool: str, fill: Mapping[str, float]) -> None:
        self.path, self.tool, self.fill = path, tool, fill
        self.items: list[tuple[str, str, str]] = []

    def add(self, name: str, column: str, hint: str = "") -> None:
        if name not in self.fill:
            self.items.append((name, column, hint))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        listed = ", ".join(f"'{name}' (column '{column}')" for name, column, _ in self.items)
        hints = " ".join(dict.fromkeys(h for _, _, h in self.items if h))
        fills = " ".join(f"--fill {name}=VALUE" for name, _, _ in self.items)
        raise AttributeFileError(
            self.path,
            f"{self.tool} file has no column for schema attribute(s) {listed}. {hints + ' ' if hints else ''}"
            f"Either choose a schema without them (--aus / --schema) or fill them with an explicit constant "
            f"({fills}), which every surrogate will then show.",
            column=self.items[0][1],
        )


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------
_DETECTION_HELP = (
    "OpenFace (columns 'confidence' and 'pose_Rx' or 'AUxx_r'), py-feat ('FaceScore' or 'FaceRectX'), "
    "LibreFace ('au_N_intensity'), canonical CSV ('id' or 'file' plus schema attribute names), "
    "JSON (a .json file or text starting with '[' or '{')"
)


def detect_format(path: str | os.PathLike[str] | InMemoryFile,
                  schema: AttributeSchema = DEFAULT_SCHEMA) -> tuple[str, str]:
    """Guess the format from the file's header; returns (format, human-readable reason)."""
    path = path if isinstance(path, InMemoryFile) else Path(path)
    try:
        with _open_text(path) as handle:
            head = handle.read(65536)
    except UnicodeDecodeError as exc:
        raise AttributeFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise AttributeFileError(path, f"cannot read ({exc.strerror or exc})") from exc
    stripped = head.lstrip()
    if not stripped:
        raise AttributeFileError(path, "empty file")
    if path.suffix.lower() == ".json" or stripped[0] in "[{":
        return "json", "JSON text"
    first_line = stripped.splitlines()[0]
    names = [n.strip() for n in next(csv.reader([first_line], delimiter=_sniff_delimiter(first_line)))]
    folded = {n.casefold() for n in names}
    if "confidence" in folded and ("pose_rx" in folded or any(_OPENFACE_AU_RE.match(n) for n in names)):
        mode = "video" if "success" in folded else "image" if "face" in folded else "unknown mode"
        return "openface", f"OpenFace header ({mode} mode: 'confidence', 'pose_R*', 'AUxx_r')"
    if "facescore" in folded or "facerectx" in folded:
        return "pyfeat", "py-feat Fex header ('FaceScore', 'FaceRectX')"
    if any(_LIBREFACE_AU_RE.match(n.casefold()) for n in names):
        return "libreface", "LibreFace header ('au_N_intensity')"
    if ({"id", "file"} & folded) and any(n in schema for n in names):
        return "canonical", "canonical attribute CSV header ('id'/'file' plus schema names)"
    shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
    raise AttributeFileError(
        path, f"cannot tell the format from the header [{shown}]; looked for: {_DETECTION_HELP}. "
        f"Pass the format explicitly if it is one of {', '.join(FORMATS)}.",
    )


# ---------------------------------------------------------------------------------------------
# Format readers
# ---------------------------------------------------------------------------------------------
def _read_openface(path: Source, schema: AttributeSchema, fill: Mapping[str, float], min_confidence: float,
                   id_prefix: str) -> _Raw:
    plan: dict[str, str] = {}
    modes: list[str] = []

    def wanted(header: _Header) -> dict[str, int]:
        missing = _MissingColumns(path, "OpenFace", fill)
        cols: dict[str, int] = {}
        is_video = header.find("success") is not None or header.find("frame") is not None
        if is_video:
            cols["frame"] = header.require("frame", "OpenFace video mode numbers every row by frame")
            cols["success"] = header.require("success", "OpenFace video mode flags failed tracking with it")
            face_id = header.find("face_id")
            if face_id is not None:
                cols["face_id"] = face_id
        else:
            cols["face"] = header.require("face", "OpenFace image mode starts with 'face, confidence'")
        cols["confidence"] = header.require("confidence", "needed to reject low-confidence detections")
        pose_columns = {"pitch": "pose_Rx", "yaw": "pose_Ry", "roll": "pose_Rz"}
        for name in schema.names:
            if name in POSE_NAMES:
                column = pose_columns[name]
                hint = "Run FeatureExtraction with -pose (or without output selectors)."
            elif name.startswith("AU"):
                column = f"{name}_r"
                hint = (f"Only the presence column '{name}_c' exists; an occurrence is not an intensity."
                        if header.find(f"{name}_c") is not None else "OpenFace 2.x writes AUxx_r with -aus.")
            else:
                column, hint = name, "OpenFace does not estimate it."
            index = header.find(column)
            if index is None:
                missing.add(name, column, hint)
                continue
            cols[f"attr:{name}"] = index
            plan[name] = column
        modes.append("video" if is_video else "image")
        missing.raise_if_any()
        return cols

    header, cells, row_numbers, malformed = _read_csv(path, wanted)
    mode = modes[0]
    prefix = id_prefix or path.stem
    n = len(row_numbers)
    if mode == "video":
        frames = [_int_text(c) for c in cells["frame"]]
        ids = [f"{prefix}_f{f}" for f in frames]
        if "face_id" in cells:
            ids = [i if _int_text(fid) == "0" else f"{i}_face{_int_text(fid)}"
                   for i, fid in zip(ids, cells["face_id"], strict=True)]
        note = f"OpenFace video mode{' with face_id' if 'face_id' in cells else ''}; ids '{prefix}_f<frame>'"
    else:
        faces = [_int_text(c) for c in cells["face"]]
        ids = [prefix if f == "0" else f"{prefix}_face{f}" for f in faces]
        note = f"OpenFace image mode (FaceLandmarkImg); ids '{prefix}' / '{prefix}_face<k>'"
    attributes: dict[str, tuple[_Column, Callable[[np.ndarray], np.ndarray]]] = {}
    for name, column in plan.items():
        unit = np.degrees if name in POSE_NAMES else _identity  # pose_R* are radians
        attributes[name] = (_parse_column(column, _strip_cells(cells[f"attr:{name}"])), unit)
    raw = _Raw(path, "openface", row_numbers, ids, [None] * n, attributes, notes=[note])
    if mode == "video":
        success = _parse_column("success", _strip_cells(cells["success"])).values
        raw.status.append((~(success == 1), lambda i: "OpenFace reports success=0: no face was tracked, its "
                           "AU and pose values are placeholders, not a neutral face", KIND_TRACKING))
    _add_confidence_check(raw, _parse_column("confidence", _strip_cells(cells["confidence"])), min_confidence)
    _attach_malformed(raw, malformed)
    return raw


def _add_confidence_check(raw: _Raw, confidence: _Column, min_confidence: float) -> None:
    values = confidence.values
    missing = ~np.isfinite(values)
    raw.status.append((missing, lambda i: f"confidence is {_describe_cell(confidence, i)}: the tool found no "
                       "face", KIND_NO_FACE))
    low = ~missing & (values < min_confidence)
    raw.status.append((low, lambda i: f"confidence {values[i]:.3g} is below the minimum {min_confidence:g}",
                       KIND_CONFIDENCE))


def _describe_cell(column: _Column, i: int) -> str:
    if i in column.bad:
        cell = column.bad[i]
        return "empty" if isinstance(cell, str) and not cell.strip() else f"{cell!r}"
    value = column.values[i]
    return "NaN" if math.isnan(value) else f"{value:g}"


def _attach_malformed(raw: _Raw, malformed: list[RejectedRow]) -> None:
    if malformed:
        raw.notes.append(f"{len(malformed)} malformed row(s) with too few fields")
    raw.row_errors.update({-(k + 1): r for k, r in enumerate(malformed)})


def _read_pyfeat(path: Source, schema: AttributeSchema, fill: Mapping[str, float], min_confidence: float,
                 id_prefix: str, au_scale: str) -> _Raw:
    plan: dict[str, str] = {}

    def wanted(header: _Header) -> dict[str, int]:
        missing = _MissingColumns(path, "py-feat", fill)
        cols = {"FaceScore": header.require("FaceScore", "py-feat's face score, used as confidence")}
        for optional in ("input", "frame"):
            index = header.find(optional)
            if index is not None:
                cols[optional] = index
        pose_columns = {"pitch": "Pitch", "yaw": "Yaw", "roll": "Roll"}
        for name in schema.names:
            if name in POSE_NAMES:
                column, hint = pose_columns[name], "py-feat writes Pitch/Roll/Yaw with a facepose model."
            elif name.startswith("AU"):
                column, hint = name, "This py-feat AU model does not estimate it."
            else:
                column, hint = name, "py-feat does not estimate it."
            index = header.find(column)
            if index is None:
                missing.add(name, column, hint)
                continue
            cols[f"attr:{name}"] = index
            plan[name] = column
        missing.raise_if_any()
        return cols

    header, cells, row_numbers, malformed = _read_csv(path, wanted)
    n = len(row_numbers)
    inputs = _strip_cells(cells["input"]) if "input" in cells else [""] * n
    frames = [_int_text(c) for c in cells["frame"]] if "frame" in cells else [""] * n
    keys = []
    for row_no, source, frame in zip(row_numbers, inputs, frames, strict=True):
        if source:
            stem = id_prefix or _stem(source)
            keys.append(f"{stem}_f{frame}" if frame and _is_video(source) else stem)
        else:
            stem = id_prefix or path.stem
            keys.append(f"{stem}_f{frame}" if frame else f"{stem}_r{row_no}")
    ids = _with_face_suffix(keys)
    files: list[str | None] = [s or None for s in inputs]
    attributes: dict[str, tuple[_Column, Callable[[np.ndarray], np.ndarray]]] = {}
    au_columns = {name: _parse_column(col, _strip_cells(cells[f"attr:{name}"])) for name, col in plan.items()}
    notes = ["py-feat Fex CSV; pose Pitch/Roll/Yaw taken as degrees in the schema's sign convention "
             "(unverified for py-feat: check with --flip)"]
    au_names = [a for a in au_columns if a.startswith("AU")]
    scale = au_scale
    if au_names:
        stacked = np.concatenate([au_columns[a].values for a in au_names])
        finite = stacked[np.isfinite(stacked)]
        peak = float(finite.max()) if finite.size else 0.0
        if scale == "auto":
            scale = "intensity" if peak > 1.0 else "probability"
            notes.append(f"py-feat AU columns auto-detected as {scale} (largest value {peak:.3g}); "
                         "declare it with --au-scale if that is wrong")
        if scale == "probability":
            notes.append("py-feat AU probabilities p in [0,1] mapped to intensity 5*p (an approximation: a "
                         "detector's probability is not a FACS intensity)")
    for name, column in au_columns.items():
        unit = (lambda x: x * 5.0) if name.startswith("AU") and scale == "probability" else _identity
        attributes[name] = (column, unit)
    raw = _Raw(path, "pyfeat", row_numbers, ids, files, attributes, notes=notes)
    _add_confidence_check(raw, _parse_column("FaceScore", _strip_cells(cells["FaceScore"])), min_confidence)
    _attach_malformed(raw, malformed)
    return raw


def _read_libreface(path: Source, schema: AttributeSchema, fill: Mapping[str, float], min_confidence: float,
                    id_prefix: str) -> _Raw:
    plan: dict[str, str] = {}

    def wanted(header: _Header) -> dict[str, int]:
        missing = _MissingColumns(path, "LibreFace", fill)
        cols: dict[str, int] = {}
        for optional in ("frame_idx", "path_to_frame", "input_image_path", "face_detection_score"):
            index = header.find(optional)
            if index is not None:
                cols[optional] = index
        for name in schema.names:
            if name in POSE_NAMES:
                column, hint = name, "Newer LibreFace versions write pitch/yaw/roll."
            elif name.startswith("AU"):
                column = f"au_{int(name[2:])}_intensity"
                hint = ("LibreFace estimates intensities only for the DISFA set (AU1, 2, 4, 5, 6, 9, 12, 15, "
                        "17, 20, 25, 26); it has no AU7 or AU23 intensity.")
            else:
                column, hint = name, "LibreFace does not estimate it."
            index = header.find(column)
            if index is None:
                missing.add(name, column, hint)
                continue
            cols[f"attr:{name}"] = index
            plan[name] = column
        missing.raise_if_any()
        return cols

    header, cells, row_numbers, malformed = _read_csv(path, wanted)
    n = len(row_numbers)
    prefix = id_prefix or path.stem
    if "frame_idx" in cells:
        ids = [f"{prefix}_f{_int_text(f)}" for f in cells["frame_idx"]]
        files: list[str | None] = (_strip_cells(cells["path_to_frame"]) if "path_to_frame" in cells
                                   else [None] * n)
        note = f"LibreFace video CSV; ids '{prefix}_f<frame_idx>'"
    elif "input_image_path" in cells:
        sources = _strip_cells(cells["input_image_path"])
        ids = _with_face_suffix([id_prefix or _stem(s) for s in sources])
        files = [s or None for s in sources]
        note = "LibreFace image CSV; ids from input_image_path"
    else:
        ids = [f"{prefix}_r{r}" for r in row_numbers]
        files = [None] * n
        note = f"LibreFace CSV without frame_idx/input_image_path; ids '{prefix}_r<row>'"
    attributes = {name: (_parse_column(col, _strip_cells(cells[f"attr:{name}"])), _identity)
                  for name, col in plan.items()}
    notes = [note, "LibreFace pitch/yaw/roll taken as degrees in the schema's sign convention (unverified: "
             "check with --flip)"]
    raw = _Raw(path, "libreface", row_numbers, ids, files, attributes, notes=notes)
    if "face_detection_score" in cells:
        _add_confidence_check(raw, _parse_column("face_detection_score", _strip_cells(
            cells["face_detection_score"])), min_confidence)
    else:
        raw.notes.append("LibreFace writes no confidence column: the minimum confidence is not applied")
    _attach_malformed(raw, malformed)
    return raw


def _read_canonical_csv(path: Source, schema: AttributeSchema, fill: Mapping[str, float]) -> _Raw:
    plan: dict[str, str] = {}
    extra: list[str] = []

    def wanted(header: _Header) -> dict[str, int]:
        missing = _MissingColumns(path, "attribute CSV", fill)
        cols: dict[str, int] = {}
        for key in ("id", "file"):
            index = header.find(key)
            if index is not None:
                cols[key] = index
        if not cols:
            raise AttributeFileError(path, "missing column 'id' (or 'file'): rows need an id", column="id")
        for name in schema.names:
            index = header.find(name)
            if index is None:
                missing.add(name, name)
                continue
            cols[f"attr:{name}"] = index
            plan[name] = name
        known = {"id", "file", *schema.names}
        extra.extend(n for n in header.names if n and n not in known and not n.startswith("Unnamed:"))
        missing.raise_if_any()
        return cols

    header, cells, row_numbers, malformed = _read_csv(path, wanted)
    n = len(row_numbers)
    files_raw = _strip_cells(cells["file"]) if "file" in cells else [""] * n
    ids = _strip_cells(cells["id"]) if "id" in cells else [_stem(f) if f else "" for f in files_raw]
    attributes = {name: (_parse_column(name, _strip_cells(cells[f"attr:{name}"])), _identity)
                  for name in plan}
    notes = ["canonical attribute CSV"]
    if extra:
        notes.append(f"ignored columns: {', '.join(extra[:20])}{' ...' if len(extra) > 20 else ''}")
    raw = _Raw(path, "canonical", row_numbers, ids, [f or None for f in files_raw], attributes, notes=notes)
    _attach_malformed(raw, malformed)
    return raw


def _read_json(path: Source, schema: AttributeSchema, fill: Mapping[str, float]) -> _Raw:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise AttributeFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise AttributeFileError(path, f"not valid JSON ({where}: {exc.msg})") from exc
    except RecursionError:
        raise AttributeFileError(path, "not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # Python's limit on the digits of an integer literal
        raise AttributeFileError(path, f"not valid JSON ({str(exc)[:120]})") from None
    except OSError as exc:
        raise AttributeFileError(path, f"cannot read ({exc.strerror or exc})") from exc
    if isinstance(data, Mapping):
        if "records" not in data:
            raise AttributeFileError(path, "a JSON object must hold a list under 'records'", column="records")
        data = data["records"]
    if not isinstance(data, list):
        raise AttributeFileError(path, f"expected a list of records, got {type(data).__name__}",
                                 column="records")
    present = {k for r in data if isinstance(r, Mapping) for k in r}
    missing = _MissingColumns(path, "JSON", fill)
    for name in schema.names:
        if name not in present:
            missing.add(name, name)
    missing.raise_if_any()
    row_errors: dict[int, RejectedRow] = {}
    ids: list[str] = []
    files: list[str | None] = []
    columns: dict[str, list[Any]] = {n: [] for n in schema.names if n in present}
    for i, record in enumerate(data):
        if not isinstance(record, Mapping):
            row_errors[i] = RejectedRow(i + 1, "", f"expected an object, got {type(record).__name__}",
                                        KIND_MALFORMED)
            record = {}
        file = record.get("file")
        file = str(file) if file not in (None, "") else None
        ids.append(str(record["id"]) if record.get("id") not in (None, "") else (_stem(file) if file else ""))
        files.append(file)
        for name, cells in columns.items():
            cells.append(record.get(name, _ABSENT))
    attributes = {name: (_parse_column(name, cells, strict_types=True), _identity)
                  for name, cells in columns.items()}
    raw = _Raw(path, "json", list(range(1, len(data) + 1)), ids, files, attributes, notes=["JSON records"])
    raw.row_errors.update(row_errors)
    return raw


# ---------------------------------------------------------------------------------------------
# Shared checks: status, parse, NaN/inf, range (with a small noted clip), duplicates.
# ---------------------------------------------------------------------------------------------
def _finalise(raw: _Raw, schema: AttributeSchema, fill: Mapping[str, float], flip: Iterable[str],
              clip_tolerance: float) -> AttributeTable:
    n = len(raw.row_numbers)
    flip = set(flip)
    values = np.zeros((n, len(schema)), dtype=np.float64)
    filled: dict[str, float] = {}
    for j, spec in enumerate(schema.attributes):
        if spec.name in raw.attributes:
            column, unit = raw.attributes[spec.name]
            converted = unit(column.values.astype(np.float64))
            values[:, j] = -converted if spec.name in flip else converted
        else:
            filled[spec.name] = float(fill[spec.name])
            values[:, j] = filled[spec.name]
    rejected: dict[int, RejectedRow] = {}
    adjustments: list[RowNote] = []

    for i, error in raw.row_errors.items():
        if i >= 0:
            rejected[i] = RejectedRow(error.row, raw.ids[i], error.reason, error.kind)
    # Row status (tracking failure, no face, low confidence): its values are not worth reporting.
    status_reason: dict[int, tuple[str, str]] = {}
    for mask, reason, kind in raw.status:
        for i in np.flatnonzero(mask):
            status_reason.setdefault(int(i), (reason(int(i)), kind))
    for i, (reason, kind) in status_reason.items():
        rejected.setdefault(i, RejectedRow(raw.row_numbers[i], raw.ids[i], reason, kind))

    lows, highs = schema.lows.astype(np.float64), schema.highs.astype(np.float64)
    tolerance = clip_tolerance * (highs - lows)
    finite = np.isfinite(values)
    outside = finite & ((values < lows) | (values > highs))
    clippable = outside & (values >= lows - tolerance) & (values <= highs + tolerance)
    problem_rows = np.flatnonzero((~finite | (outside & ~clippable)).any(axis=1))
    bad_cells = {i for _, (col, _) in raw.attributes.items() for i in col.bad}
    for i in sorted(set(problem_rows.tolist()) | bad_cells):
        if i in rejected:
            continue
        problems: list[str] = []
        kinds: list[str] = []
        for j, spec in enumerate(schema.attributes):
            column = raw.attributes.get(spec.name, (None, None))[0]
            if column is not None and i in column.bad:
                cell = column.bad[i]
                if cell is _ABSENT or (isinstance(cell, str) and not cell.strip()):
                    reason = "is missing" if cell is _ABSENT else "is empty (the tool wrote no value)"
                    problems.append(str(AttributeProblem(None, spec.name, reason)))
                    kinds.append(KIND_MISSING)
                else:
                    reason = spec.check(cell) or "is not a number"
                    problems.append(str(AttributeProblem(None, spec.name, reason)))
                    kinds.append(KIND_INVALID)
                continue
            if finite[i, j] and not (outside[i, j] and not clippable[i, j]):
                continue
            reason = spec.check(float(values[i, j]))
            if reason:
                unit = raw.attributes[spec.name][1] if column is not None else _identity
                if column is not None and (spec.name != column.name or unit is not _identity):
                    reason += f" (from column '{column.name}' = {_describe_cell(column, i)})"
                problems.append(str(AttributeProblem(None, spec.name, reason)))
                kinds.append(KIND_MISSING if not finite[i, j] else KIND_RANGE)
        if problems:
            kind = KIND_MISSING if KIND_MISSING in kinds else kinds[0]
            rejected[i] = RejectedRow(raw.row_numbers[i], raw.ids[i], "; ".join(problems), kind)

    for i, j in zip(*np.nonzero(clippable), strict=True):
        if int(i) in rejected:
            continue
        spec = schema.attributes[j]
        clipped = float(np.clip(values[i, j], lows[j], highs[j]))
        adjustments.append(RowNote(raw.row_numbers[i], raw.ids[i],
                                   f"{spec.name} {values[i, j]:.4g} clipped to {clipped:g}"))
        values[i, j] = clipped

    seen: dict[str, int] = {}
    for i, row_id in enumerate(raw.ids):
        if i in rejected:
            continue  # a rejected row does not claim its id
        if not row_id:
            rejected[i] = RejectedRow(raw.row_numbers[i], "", "the row has no id (empty 'id' and 'file')",
                                      KIND_MISSING)
        elif row_id in seen:
            reason = f"duplicate id '{row_id}' (first used by row {seen[row_id]})"
            rejected[i] = RejectedRow(raw.row_numbers[i], row_id, reason, KIND_DUPLICATE)
        else:
            seen[row_id] = raw.row_numbers[i]

    keep = np.array([i not in rejected for i in range(n)], dtype=bool)
    all_rejected = sorted([*rejected.values(), *(e for k, e in raw.row_errors.items() if k < 0)],
                          key=lambda r: r.row)
    notes = list(raw.notes)
    for name, value in filled.items():
        notes.append(f"'{name}' is not in the source: every row filled with {value:g}"
                     + (" (unknown)" if name == "gender" and value == 0.5 else ""))
    if flip:
        notes.append(f"sign flipped for: {', '.join(sorted(flip))}")
    if adjustments:
        notes.append(f"{len(adjustments)} value(s) within {clip_tolerance:g} of the range clipped into range")
    kept = np.flatnonzero(keep)
    return AttributeTable(
        schema=schema,
        ids=[raw.ids[i] for i in kept],
        files=[raw.files[i] for i in kept],
        values=values[keep].astype(np.float32),
        rejected=all_rejected,
        source_format=raw.source_format,
        rows=[raw.row_numbers[i] for i in kept],
        rows_read=n + sum(1 for k in raw.row_errors if k < 0),
        notes=notes,
        adjustments=adjustments,
        filled=filled,
    )


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def read_attributes(
    path: str | os.PathLike[str] | InMemoryFile,
    *,
    format: str = "auto",
    schema: AttributeSchema = DEFAULT_SCHEMA,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    fill: Mapping[str, float] | None = None,
    flip: Iterable[str] = (),
    au_scale: str = "auto",
    id_prefix: str = "",
    clip_tolerance: float = DEFAULT_CLIP_TOLERANCE,
) -> AttributeTable:
    """Read an attribute file (a path or an ``InMemoryFile``) of any supported format into the schema;
    bad rows go to ``.rejected``.

    ``fill`` gives constants for schema attributes the source has no column for (default
    ``DEFAULT_FILL``: gender 0.5, "unknown"); a missing column not in ``fill`` is an
    ``AttributeFileError``. ``flip`` negates pose attributes (for tools with another sign convention).
    ``au_scale`` says whether py-feat AU columns are probabilities (x5) or 0-5 intensities.
    ``clip_tolerance`` (fraction of each range) lets tiny overshoots be clipped and noted per row.
    """
    path = path if isinstance(path, InMemoryFile) else Path(path)
    fill = dict(DEFAULT_FILL if fill is None else fill)
    for name, value in fill.items():
        if name not in schema:
            continue
        reason = schema.spec(name).check(value)
        if reason:
            raise ValueError(f"fill value for '{name}': {reason}")
    flip = set(flip)
    unknown_flip = flip - set(POSE_NAMES)
    if unknown_flip:
        raise ValueError(f"only pose attributes can be flipped ({', '.join(POSE_NAMES)}), "
                         f"got {', '.join(sorted(unknown_flip))}")
    if au_scale not in AU_SCALES:
        raise ValueError(f"au_scale must be one of {', '.join(AU_SCALES)}, got {au_scale!r}")
    if not 0.0 <= clip_tolerance < 0.5:
        raise ValueError(f"clip_tolerance must be in [0, 0.5), got {clip_tolerance}")
    if not path.is_file():
        raise AttributeFileError(path, "no such file" if not path.exists() else "not a file")
    detection = ""
    if format == "auto":
        format, detection = detect_format(path, schema)
    elif format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of auto, {', '.join(FORMATS)}")
    if format == "openface":
        raw = _read_openface(path, schema, fill, min_confidence, id_prefix)
    elif format == "pyfeat":
        raw = _read_pyfeat(path, schema, fill, min_confidence, id_prefix, au_scale)
    elif format == "libreface":
        raw = _read_libreface(path, schema, fill, min_confidence, id_prefix)
    elif format == "canonical":
        raw = _read_canonical_csv(path, schema, fill)
    else:
        raw = _read_json(path, schema, fill)
    if detection:
        raw.notes.insert(0, f"format detected: {format} ({detection})")
    return _finalise(raw, schema, fill, flip, clip_tolerance)


def _format_value(value: float) -> str:
    text = format(float(value), ".7g")
    return "0" if text == "-0" else text


def write_canonical_csv(table: AttributeTable, path: str | os.PathLike[str]) -> None:
    """Write ``id,file,<schema names>`` atomically: the one attribute file every later step reads."""
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "file", *table.schema.names])
        for row_id, file, row in zip(table.ids, table.files, table.values, strict=True):
            writer.writerow([row_id, file or "", *map(_format_value, row)])


def write_rejected_csv(table: AttributeTable, path: str | os.PathLike[str]) -> None:
    """Write ``row,id,kind,reason`` for every excluded row (the audit trail of a conversion)."""
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["row", "id", "kind", "reason"])
        for r in table.rejected:
            writer.writerow([r.row, r.id, r.kind, r.reason])


def parse_fill(items: Iterable[str]) -> dict[str, float]:
    """``["AU07=0", "gender=0.5"]`` -> ``{"AU07": 0.0, "gender": 0.5}`` (the CLI's --fill)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--fill expects NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--fill {name.strip()}: {value!r} is not a number") from None
    return out
