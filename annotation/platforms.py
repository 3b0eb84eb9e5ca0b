"""Import: crowd platform result files, as the platforms really write them -> one tidy label table.

Supported:
  * Label Studio export JSON (tasks with ``annotations[].result[]`` choices, ``completed_by``,
    ``lead_time``, ``was_cancelled``);
  * Label Studio export CSV and JSON-MIN (one row or object per annotation: ``annotator``,
    ``annotation_id``, ``lead_time``, the data fields and one column named after the question);
  * Amazon Mechanical Turk batch results CSV (``HITId``, ``AssignmentId``, ``WorkerId``,
    ``AssignmentStatus``, ``WorkTimeInSeconds``, ``Input.*``, ``Answer.*``), including a leading
    unnamed index column left by pandas; answers in AWS's documented crowd-radio-group output
    (``Answer.<q>.option_<N>.<choice>`` columns, or the same JSON in ``Answer.taskAnswers``), older
    ``Answer.<q>.option_<N>`` booleans, plain ``Answer.<q>`` values and crowd-classifier
    ``Answer.<q>.label``; session HITs (``Input.token_<K>``, answers ``<q>.slot<K>``) give one label
    per image.

The result has columns worker, task (the opaque token), label, time_s, assignment. Problems in single
rows (rejected assignments, empty answers, labels that are not a choice, unknown tasks, duplicate
assignments) are reported per row and the row is left out; a file that is not one of these formats at
all raises ``LabelFileError`` naming the file and what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from annotation.question import Question

PLATFORMS: tuple[str, ...] = ("auto", "labelstudio-json", "labelstudio-csv", "mturk")
LABEL_COLUMNS: tuple[str, ...] = ("worker", "task", "label", "time_s", "assignment")
_TOKEN_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_MTURK_REQUIRED = ("AssignmentId", "WorkerId", "AssignmentStatus")


class LabelFileError(ValueError):
    """A result file that cannot be read as the given platform's format at all."""


@dataclass(frozen=True)
class RowProblem:
    """One left-out row: where it was, which task/worker, and why."""

    row: int | str
    reason: str
    task: str | None = None
    worker: str | None = None

    def __str__(self) -> str:
        who = f" worker {self.worker}" if self.worker else ""
        what = f" task {self.task}" if self.task else ""
        return f"row {self.row}{who}{what}: {self.reason}"


@dataclass
class ImportResult:
    """Tidy labels plus everything that was left out, and why."""

    labels: pd.DataFrame
    platform: str
    source: str
    problems: list[RowProblem] = field(default_factory=list)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for p in self.problems:
            key = p.reason.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        lines = [
            f"{self.source}: {len(self.labels)} labels from {self.labels['worker'].nunique()} workers "
            f"on {self.labels['task'].nunique()} tasks ({self.platform})"
        ]
        lines += [f"  left out {n} row(s): {reason}" for reason, n in sorted(counts.items())]
        return "\n".join(lines)


# -- entry point ---------------------------------------------------------------------------------
def read_labels(
    path: str | os.PathLike[str],
    question: Question,
    *,
    platform: str = "auto",
    known_tasks: Iterable[str] | None = None,
) -> ImportResult:
    """Read one platform result file into tidy labels; see the module docstring for formats."""
    path = Path(path)
    if platform not in PLATFORMS:
        raise LabelFileError(f"unknown platform {platform!r}; choose from {list(PLATFORMS)}")
    if not path.is_file():
        raise LabelFileError(f"{path}: no such file")
    detected = detect_platform(path)
    if platform == "auto":
        platform = detected
    elif platform != detected:
        raise LabelFileError(f"{path}: asked to read it as {platform}, but it looks like a {detected} file")
    if platform == "labelstudio-json":
        rows, problems = _labelstudio_json(path, question)
    elif platform == "labelstudio-csv":
        rows, problems = _labelstudio_csv(path, question)
    else:
        rows, problems = _mturk(path, question)
    labels = pd.DataFrame(rows, columns=["row", *LABEL_COLUMNS])
    labels, more = _check_rows(labels, known_tasks)
    problems += more
    if labels.empty and not problems:
        raise LabelFileError(f"{path}: contains no answers")
    if known_tasks is not None and labels.empty and any("unknown task" in p.reason for p in problems):
        raise LabelFileError(
            f"{path}: none of its tasks belongs to this batch (wrong mapping or wrong file?)"
        )
    return ImportResult(
        labels=labels.drop(columns="row").reset_index(drop=True),
        platform=platform,
        source=str(path),
        problems=problems,
    )


def detect_platform(path: Path) -> str:
    """Guess the platform from the file's content (not its name)."""
    head = path.read_bytes()[:4096].lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    if head[:1] in (b"[", b"{"):
        return "labelstudio-json"
    header = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    columns = {c.strip().strip('"') for c in header.split(",")}
    if {"AssignmentId", "WorkerId"} <= columns or "HITId" in columns:
        return "mturk"
    if {"annotator", "annotation_id"} <= columns:
        return "labelstudio-csv"
    raise LabelFileError(
        f"{path}: not a Label Studio export (JSON, or CSV with annotator/annotation_id columns) nor an MTurk "
        f"batch results CSV (AssignmentId/WorkerId columns); header starts {header[:120]!r}"
    )


# -- shared checks -----------------------------------------------------------------------------------
def task_from_url(url: str) -> str | None:
    """The token of a task image URL (``.../<token>.png``, also after Label Studio's upload prefix)."""
    if not isinstance(url, str) or not url:
        return None
    parsed = urlparse(url)
    candidates = [parsed.path, *(v for part in parsed.query.split("&") for v in part.split("=")[1:])]
    for candidate in candidates:
        stem = PurePosixPath(unquote(candidate)).stem
        stem = stem.rsplit("-", 1)[-1]  # Label Studio uploads are renamed <hash>-<original name>
        if _TOKEN_PATTERN.match(stem):
            return stem
    return None


def _check_rows(
    labels: pd.DataFrame, known_tasks: Iterable[str] | None
) -> tuple[pd.DataFrame, list[RowProblem]]:
    problems: list[RowProblem] = []
    keep = pd.Series(True, index=labels.index)
    if known_tasks is not None:
        known = set(known_tasks)
        unknown = ~labels["task"].isin(known)
        for r in labels[unknown].itertuples():
            problems.append(RowProblem(r.row, "unknown task: not in the private mapping", r.task, r.worker))
        keep &= ~unknown
    duplicated = labels.duplicated(subset=["worker", "task"], keep="first") & keep
    for r in labels[duplicated].itertuples():
        problems.append(
            RowProblem(
                r.row,
                "duplicate assignment: this worker already labelled this task (the first answer is kept)",
                r.task,
                r.worker,
            )
        )
    keep &= ~duplicated
    return labels[keep], problems


def _normalise_label(value: Any, question: Question) -> tuple[str | None, str | None]:
    """Return (label, None) or (None, why it is not usable)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None, "empty answer"
    text = str(value).strip()
    if not text:
        return None, "empty answer"
    if text not in question.choices:
        return None, f"label {text!r} is not one of the choices {list(question.choices)}"
    return text, None


def _as_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number


# -- Label Studio JSON ---------------------------------------------------------------------------------
def _labelstudio_worker(completed_by: Any) -> str | None:
    # The id first: exports give the same user as a bare id or as a user object, and the email
    # (personal data of the annotator) is needed for neither.
    if isinstance(completed_by, dict):
        for key in ("id", "email", "username"):
            if completed_by.get(key) not in (None, ""):
                return str(completed_by[key])
        return None
    return None if completed_by in (None, "") else str(completed_by)


def _labelstudio_json(path: Path, question: Question) -> tuple[list[tuple], list[RowProblem]]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise LabelFileError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if isinstance(tasks, dict):
        tasks = [tasks]
    if isinstance(tasks, list) and tasks and all(
        isinstance(t, dict) and "data" not in t and ("annotation_id" in t or "annotator" in t) for t in tasks
    ):
        return _labelstudio_flat(tasks, question, first_row=0)  # the JSON-MIN export: one object per annotation
    if not isinstance(tasks, list) or (tasks and not all(isinstance(t, dict) and "data" in t for t in tasks)):
        raise LabelFileError(f"{path}: not a Label Studio export (expected a list of tasks with 'data')")
    if tasks and not any("annotations" in t or "completions" in t for t in tasks):
        raise LabelFileError(
            f"{path}: Label Studio tasks without 'annotations': this is a task import file, "
            "not an export of results"
        )
    rows: list[tuple] = []
    problems: list[RowProblem] = []
    for t_index, task in enumerate(tasks):
        data = task.get("data") or {}
        where_task = f"task {task.get('id', t_index)}"
        slots = _labelstudio_slots(data, question)
        if not slots:
            problems.append(RowProblem(where_task, "task has no token and its image URL holds none"))
            continue
        first = next(iter(slots.values()))
        for a_index, annotation in enumerate(task.get("annotations", task.get("completions", [])) or []):
            where = f"{where_task} annotation {annotation.get('id', a_index)}"
            worker = _labelstudio_worker(annotation.get("completed_by"))
            if worker is None:
                problems.append(RowProblem(where, "annotation has no completed_by", first))
                continue
            if annotation.get("was_cancelled"):
                problems.append(RowProblem(where, "skipped: annotation was cancelled", first, worker))
                continue
            chosen: dict[str, list[str]] = {name: [] for name in slots}
            for r in annotation.get("result", []) or []:
                if r.get("type") == "choices" and r.get("from_name") in chosen:
                    chosen[r["from_name"]] += (r.get("value") or {}).get("choices", [])
            for name, token in slots.items():
                _add_answer(
                    rows,
                    problems,
                    (where if len(slots) == 1 else f"{where} ({name})", worker, token),
                    chosen[name],
                    question,
                    _as_float(annotation.get("lead_time")),
                    str(annotation.get("id", f"{t_index}.{a_index}")),
                )
    return rows, problems


def _add_answer(
    rows: list[tuple],
    problems: list[RowProblem],
    who: tuple[int | str, str, str],
    chosen: list[Any],
    question: Question,
    time_s: float,
    assignment: str,
) -> None:
    """Keep one answer (``who`` = where, worker, token) as a row, or report why it cannot be kept."""
    where, worker, token = who
    if len(chosen) > 1:
        problems.append(RowProblem(where, f"several choices {chosen} for a single-choice question", token, worker))
        return
    label, why = _normalise_label(chosen[0] if chosen else None, question)
    if why:
        problems.append(RowProblem(where, why, token, worker))
        return
    rows.append((where, worker, token, label, time_s, assignment))


def _labelstudio_slots(data: dict[str, Any], question: Question) -> dict[str, str]:
    """Answer name -> task token: one image (``question.name``) or a session's ``<question>_<index>``."""
    images = data.get("images")
    if isinstance(images, list):  # a session task (publish --session-faces): Label Studio's Repeater
        out = {}
        for k, image in enumerate(images):
            image = image if isinstance(image, dict) else {"image": image}
            token = image.get("token") or task_from_url(str(image.get("image", "")))
            if token:
                out[f"{question.name}_{k}"] = str(token)
        return out
    token = data.get("token") or task_from_url(str(data.get("image", "")))
    return {question.name: str(token)} if token else {}


# -- Label Studio CSV ------------------------------------------------------------------------------------
def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LabelFileError(f"{path}: not a readable CSV ({exc})") from exc
    first = frame.columns[0] if len(frame.columns) else ""
    if first == "" or str(first).startswith("Unnamed: 0"):  # pandas' index column, written by to_csv()
        frame = frame.drop(columns=first)
    return frame


def _labelstudio_csv(path: Path, question: Question) -> tuple[list[tuple], list[RowProblem]]:
    frame = _read_csv(path)
    if question.name not in frame.columns:
        raise LabelFileError(
            f"{path}: no column {question.name!r} (the question name); columns: {list(frame.columns)}"
        )
    if "token" not in frame.columns and "image" not in frame.columns:
        raise LabelFileError(f"{path}: needs a 'token' or 'image' column to identify the task")
    return _labelstudio_flat(frame.to_dict("records"), question, first_row=2)  # 1-based, after the header


def _labelstudio_flat(
    records: list[dict[str, Any]], question: Question, *, first_row: int
) -> tuple[list[tuple], list[RowProblem]]:
    """One record per annotation (the CSV and JSON-MIN exports): data fields, the answer, annotator."""
    rows: list[tuple] = []
    problems: list[RowProblem] = []
    for i, record in enumerate(records):
        row_no = i + first_row
        token = record.get("token") or task_from_url(str(record.get("image", "") or ""))
        worker = _labelstudio_worker(record.get("annotator"))
        worker = (worker.strip() or None) if worker is not None else None
        if not token:
            problems.append(
                RowProblem(row_no, "row has no token and its image URL holds none", worker=worker)
            )
            continue
        if worker is None:
            problems.append(RowProblem(row_no, "row has no annotator", token))
            continue
        raw = record.get(question.name, "")
        if isinstance(raw, str) and raw.startswith("{"):  # several choices are written as JSON {"choices": [...]}
            with contextlib.suppress(json.JSONDecodeError):
                raw = json.loads(raw)
        chosen = raw.get("choices", []) if isinstance(raw, dict) else [raw]
        _add_answer(
            rows,
            problems,
            (row_no, worker, token),
            chosen,
            question,
            _as_float(record.get("lead_time")),
            str(record.get("annotation_id", row_no)),
        )
    return rows, problems


# -- Mechanical Turk -----------------------------------------------------------------------------------------
TASK_ANSWERS = "Answer.taskAnswers"
_SLOT_TOKEN = re.compile(r"^Input\.token_(\d+)$")
_OPTION = re.compile(r"^option_(\d+)(?:\.(.*))?$", re.DOTALL)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "on", "yes")


def session_field(question: Question, slot: int) -> str:
    """The answer name of image ``slot`` of a session HIT (``<question>.slot<N>``)."""
    return f"{question.name}.slot{slot}"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """MTurk's own flattening of a crowd-form answer object: nested keys joined by dots."""
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list):
        for inner in value:  # taskAnswers is a list holding one object per submitted form
            _flatten(inner, prefix, out)
    else:
        out[prefix] = value


def _mturk_answers(record: dict[str, Any], columns: list[str]) -> tuple[dict[str, Any], str | None]:
    """One row's answers as ``name[.key...]`` -> value, from ``Answer.*`` columns and ``Answer.taskAnswers``."""
    flat = {c[len("Answer.") :]: record[c] for c in columns if c != TASK_ANSWERS}
    raw = str(record.get(TASK_ANSWERS, "") or "").strip()
    if raw:
        try:
            _flatten(json.loads(raw), "", flat)
        except json.JSONDecodeError as exc:
            return flat, f"{TASK_ANSWERS} is not JSON ({exc.msg})"
    return flat, None


def decode_answer(flat: dict[str, Any], field: str, question: Question) -> tuple[str | None, str | None]:
    """The label a worker gave to ``field``, from any of MTurk's shapes; (label, None) or (None, why).

    Shapes: AWS's documented crowd-radio-group output ``<field>.option_<N>`` -> {``<value>``: true},
    flattened to ``<field>.option_<N>.<value>``; older ``<field>.option_<N>`` booleans (value from the
    choice order) or ``<field>.<choice>`` booleans (``.on`` suffixes of plain HTML radios); a plain
    ``<field>`` value; a crowd-classifier's ``<field>.label``.
    """
    prefix = f"{field}."
    selected = []
    for key, value in flat.items():
        if not key.startswith(prefix) or key == f"{field}.label" or not _truthy(value):
            continue
        rest = key[len(prefix) :].removesuffix(".on")
        option = _OPTION.match(rest)
        if option is None:
            selected.append(rest)
        elif option.group(2) is not None:
            selected.append(option.group(2))
        else:
            n = int(option.group(1))
            selected.append(question.choices[n] if n < len(question.choices) else rest)
    if len(selected) > 1:
        return None, f"several choices {selected} for a single-choice question"
    if selected:
        return _normalise_label(selected[0], question)
    for key in (field, f"{field}.label"):
        if str(flat.get(key, "") or "").strip():
            return _normalise_label(flat[key], question)
    return None, "empty answer"


def _mturk_slots(frame: pd.DataFrame, question: Question, path: Path) -> list[tuple[str, str | None, str | None]]:
    """(answer field, token column, image URL column) per image of a HIT: one, or one per session slot."""
    slots = sorted(int(m.group(1)) for c in frame.columns if (m := _SLOT_TOKEN.match(c)))
    if slots:
        return [
            (session_field(question, k), f"Input.token_{k}", url if (url := f"Input.image_url_{k}") in frame else None)
            for k in slots
        ]
    token_column = "Input.token" if "Input.token" in frame.columns else None
    url_column = "Input.image_url" if "Input.image_url" in frame.columns else None
    if token_column is None and url_column is None:
        raise LabelFileError(f"{path}: needs an Input.token or Input.image_url column to identify the task")
    return [(question.name, token_column, url_column)]


def _mturk(path: Path, question: Question) -> tuple[list[tuple], list[RowProblem]]:
    frame = _read_csv(path)
    missing = [c for c in _MTURK_REQUIRED if c not in frame.columns]
    if missing:
        raise LabelFileError(f"{path}: MTurk results CSV lacks column(s) {missing}")
    slots = _mturk_slots(frame, question, path)
    answer_columns = [c for c in frame.columns if c.startswith("Answer.")]
    if TASK_ANSWERS not in answer_columns and not any(
        c == f"Answer.{name}" or c.startswith(f"Answer.{name}.") for name, _, _ in slots for c in answer_columns
    ):
        raise LabelFileError(
            f"{path}: no answer column for question {question.name!r} (expected {TASK_ANSWERS}, "
            f"Answer.{slots[0][0]}.option_N.<choice> or Answer.{slots[0][0]}); answer columns present: "
            f"{answer_columns}"
        )
    rows: list[tuple] = []
    problems: list[RowProblem] = []
    seen_assignments: set[str] = set()
    for i, record in enumerate(frame.to_dict("records")):
        row_no = i + 2
        worker = record["WorkerId"].strip() or None
        assignment = record["AssignmentId"].strip()
        status = record["AssignmentStatus"].strip()
        tasks = [
            ((record.get(tc) if tc else "") or task_from_url(record.get(uc, "") if uc else ""), name)
            for name, tc, uc in slots
        ]
        first = next((t for t, _ in tasks if t), None)
        if first is None:
            problems.append(RowProblem(row_no, "row has no task token and its image URL holds none", worker=worker))
            continue
        if worker is None:
            problems.append(RowProblem(row_no, "row has no WorkerId", first))
            continue
        if status == "Rejected":
            problems.append(RowProblem(row_no, "rejected assignment: excluded", first, worker))
            continue
        if assignment and assignment in seen_assignments:
            problems.append(
                RowProblem(row_no, f"duplicate assignment: AssignmentId {assignment} appears again", first, worker)
            )
            continue
        seen_assignments.add(assignment)
        flat, bad = _mturk_answers(record, answer_columns)
        if bad:
            problems.append(RowProblem(row_no, bad, first, worker))
            continue
        time_s = _as_float(record.get("WorkTimeInSeconds"))
        for token, name in tasks:
            if not token:
                continue  # an unused slot of a shorter session
            where = row_no if len(slots) == 1 else f"{row_no} ({name})"
            label, why = decode_answer(flat, name, question)
            if why:
                problems.append(RowProblem(where, why, token, worker))
                continue
            rows.append((where, worker, token, label, time_s, assignment))
    return rows, problems


def write_labels(labels: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write the tidy table (worker, task, label, time_s, assignment) atomically."""
    from surrogate.imageio import atomic_write_text

    atomic_write_text(path, labels.loc[:, list(LABEL_COLUMNS)].to_csv(index=False))


def read_tidy_labels(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a tidy table written by ``write_labels`` (or any CSV with worker, task, label)."""
    path = Path(path)
    try:
        frame = pd.read_csv(
            path, dtype={"worker": str, "task": str, "label": str, "assignment": str}, keep_default_na=False
        )
    except (OSError, pd.errors.ParserError) as exc:
        raise LabelFileError(f"{path}: cannot read labels ({exc})") from exc
    missing = [c for c in ("worker", "task", "label") if c not in frame.columns]
    if missing:
        raise LabelFileError(
            f"{path}: tidy label table lacks column(s) {missing} (write it with 'surrogate annotate import')"
        )
    if "time_s" not in frame.columns:
        frame["time_s"] = float("nan")
    if "assignment" not in frame.columns:
        frame["assignment"] = ""
    frame["time_s"] = pd.to_numeric(frame["time_s"], errors="coerce")
    return frame.loc[:, list(LABEL_COLUMNS)]
