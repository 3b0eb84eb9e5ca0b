"""Resumable, sharded batch synthesis: every valid row of an attribute file -> surrogate PNGs.

Built for runs too large for one process or one attempt (a Kubernetes Indexed Job, a preemptible
node). Shard ``i/N`` owns the rows ``r`` with ``r % N == i``; shards share one output folder and
never write the same file. Output of a shard (``TAG`` is empty for ``0/1``, else
``.shard-00002-of-00016``)::

    OUT/batch.json             the run's options; a rerun with other options is refused
    OUT/images/<id>_<k>.png    surrogate k of row id (atomic writes: whole or absent)
    OUT/manifest{TAG}.jsonl    journal: one JSON line per finished image, appended and fsynced per
                               chunk AFTER its PNGs are on disk, so a journaled image is complete
    OUT/manifest{TAG}.csv      the journal as a sorted CSV, written when the shard finishes
    OUT/errors{TAG}.csv        rows the reader rejected and rows that failed to render, with why

A rerun (after a kill, a crash or a per-row failure) skips journaled images, repairs a torn last
journal line, and renders the rest; at most one chunk is redone. Surrogate k of row i has the seed
``surrogate.runtime.row_seed(seed, i, k, n)``, so ``surrogate synthesize`` and this command
give the same image for the same row whatever the shard or chunk it falls in.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from surrogate.imageio import atomic_write_bytes, atomic_write_text, encode_png, safe_file_stem
from surrogate.runtime import row_seed
from surrogate.schema import AttributeSchema

BACKENDS: tuple[str, ...] = ("embedded", "triton")
RUN_FILE = "batch.json"
IMAGES_DIR = "images"
ERROR_COLUMNS = ["row", "source_row", "id", "k", "seed", "stage", "reason"]

# (N, A) natural-unit values in the renderer's schema + N seeds -> uint8 (N, H, W) or (N, H, W, 3)
RenderFn = Callable[[np.ndarray, Sequence[int]], np.ndarray]


class BatchError(ValueError):
    """The run cannot start or continue (bad shard, options that contradict an earlier run)."""


class BackendUnavailableError(RuntimeError):
    """The backend cannot be reached at all (e.g. Triton down): retrying later can succeed."""


@dataclass(frozen=True)
class Shard:
    """Which rows this process renders: those with ``row % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise BatchError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/N"`` (as a Kubernetes Indexed Job passes ``$JOB_COMPLETION_INDEX/$SHARDS``)."""
        try:
            index_text, count_text = text.split("/")
            return cls(int(index_text), int(count_text))
        except ValueError as exc:
            if isinstance(exc, BatchError):
                raise
            raise BatchError(f"shard {text!r}: expected INDEX/COUNT such as 0/4") from None

    def owns(self, row: int) -> bool:
        return row % self.count == self.index

    @property
    def tag(self) -> str:
        return "" if self.count == 1 else f".shard-{self.index:05d}-of-{self.count:05d}"


@dataclass(frozen=True)
class Renderer:
    """A way to turn values + seeds into images, and what to write about it in the manifest."""

    render: RenderFn
    schema: AttributeSchema
    method: str
    backend: str
    model: str
    version: str


@dataclass(frozen=True)
class BatchItem:
    """One image to produce: surrogate ``k`` of accepted row ``row``."""

    row: int
    source_row: int
    id: str
    k: int
    seed: int
    file: str  # relative to the output folder


@dataclass
class BatchResult:
    """What one invocation did; ``failed`` rows are retried by the next run."""

    out_dir: Path
    shard: Shard
    planned: int
    already_done: int
    rendered: int
    failed: int
    rejected: int
    manifest: Path
    errors: Path
    error_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.already_done + self.rendered == self.planned


# Attributes held at one value per private subject wherever surrogates are seeded by subject. One person's
# photos are read at somewhat different genders (0.7 in one, 0.9 in the next), and the photoreal method
# renders such a difference, so the subject's one surrogate person would change from photo to photo; the
# median keeps it one person (docs/photoreal.md, "Identity").
HELD_PER_SUBJECT = ("gender",)


def hold_per_subject(values: np.ndarray, subjects: Sequence[Hashable], names: Sequence[str],
                     held: Sequence[str] = HELD_PER_SUBJECT) -> np.ndarray:
    """``values`` (N, A; columns ``names``) with each ``held`` attribute replaced, on every row, by its median
    over the rows of that row's subject (a copy; attributes not in ``names`` are skipped)."""
    values = np.array(values, dtype=np.float32, copy=True)
    if len(subjects) != len(values):
        raise ValueError(f"{len(subjects)} subjects for {len(values)} rows")
    rows_of: dict[Hashable, list[int]] = {}
    for row, subject in enumerate(subjects):
        rows_of.setdefault(subject, []).append(row)
    for name in held:
        if name not in names:
            continue
        column = list(names).index(name)
        for rows in rows_of.values():
            values[rows, column] = np.float32(np.median(values[rows, column]))
    return values


def plan_items(ids: Sequence[str], source_rows: Sequence[int], shard: Shard, seed: int,
               n_per_row: int, subjects: Sequence[int] | None = None) -> list[BatchItem]:
    """Every image the shard owns, in row order. File names come from the row id (unique per file).

    With ``subjects`` (one non-negative integer per row), surrogate k of a row is seeded by its subject
    instead of its row (``row_seed(seed, subject, k, n)``): every row of one subject shows one surrogate person.
    """
    stems = [safe_file_stem(i) for i in ids]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    items = []
    for row, (row_id, stem) in enumerate(zip(ids, stems, strict=True)):
        if not shard.owns(row):
            continue
        # Two ids that sanitise to the same name ("a/b", "a_b") get the row number as well.
        unique = stem if counts[stem] == 1 else f"{stem}-r{row}"
        key = row if subjects is None else int(subjects[row])
        for k in range(n_per_row):
            items.append(BatchItem(row, int(source_rows[row]), str(row_id), k,
                                   row_seed(seed, key, k, n_per_row), f"{IMAGES_DIR}/{unique}_{k}.png"))
    return items


class Journal:
    """Append-only JSON-lines manifest; a line is written only after its image is on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[tuple[int, int], dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1  # a kill during an append can leave a torn last line
        for line in data[:keep].splitlines():
            entry = json.loads(line)
            self.entries[(int(entry["row"]), int(entry["k"]))] = entry
        if keep != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def done(self, item: BatchItem, out_dir: Path) -> bool:
        entry = self.entries.get((item.row, item.k))
        return entry is not None and entry["file"] == item.file and (out_dir / item.file).is_file()

    def append(self, entries: Iterable[dict[str, Any]]) -> None:
        entries = list(entries)
        if not entries:
            return
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for entry in entries:
            self.entries[(int(entry["row"]), int(entry["k"]))] = entry


def check_run_options(out_dir: Path, options: dict[str, Any]) -> None:
    """Record the run's options on first use of ``out_dir``; refuse a rerun that would mix runs."""
    path = out_dir / RUN_FILE
    if path.exists():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: (earlier.get(k), v) for k, v in options.items() if earlier.get(k) != v}
        if changed:
            listed = ", ".join(f"{k}: {a!r} before, {b!r} now" for k, (a, b) in sorted(changed.items()))
            raise BatchError(f"{out_dir} holds a run with other options ({listed}); "
                             "rerun with the same options or use another --out")
        return
    atomic_write_text(path, json.dumps(options, indent=2, sort_keys=True) + "\n")


def run_batch(
    values: np.ndarray,
    ids: Sequence[str],
    out_dir: str | os.PathLike[str],
    renderer: Renderer,
    *,
    source_rows: Sequence[int] | None = None,
    rejected: Sequence[dict[str, Any]] = (),
    shard: Shard = Shard(),
    seed: int = 0,
    n_per_row: int = 1,
    chunk_size: int = 64,
    source: str = "",
    progress: bool = True,
    subjects: Sequence[int] | None = None,
) -> BatchResult:
    """Render the shard's missing images of ``values`` (N x A, ``renderer.schema`` order).

    ``rejected`` rows (dicts with ``row`` = source row number, ``id``, ``reason``) go to the error
    CSV of the shard that owns their source row. Per-image failures are recorded, not raised.
    ``subjects``: per-row subject numbers that seed the surrogates instead of the rows (``plan_items``);
    each subject's ``HELD_PER_SUBJECT`` attributes are then rendered (and journaled) at its median.
    """
    if chunk_size < 1 or n_per_row < 1:
        raise BatchError("chunk_size and n_per_row must be >= 1")
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or len(values) != len(ids):
        raise BatchError(f"need (N, A) values and N ids, got {values.shape} and {len(ids)} ids")
    source_rows = list(range(len(ids))) if source_rows is None else list(source_rows)
    out = Path(out_dir)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    options = {"source": source, "method": renderer.method, "model": renderer.model,
               "version": renderer.version, "seed": seed, "n": n_per_row,
               "shards": shard.count, "attributes": list(renderer.schema.names)}
    if subjects is not None:  # only then, so that folders of earlier runs still resume
        options["seeded_by"] = "subject"
        options["held_per_subject"] = [n for n in HELD_PER_SUBJECT if n in renderer.schema.names]
    check_run_options(out, options)

    journal = Journal(out / f"manifest{shard.tag}.jsonl")
    errors_path = out / f"errors{shard.tag}.csv"
    error_rows = [{"row": "", "source_row": r["row"], "id": r["id"], "k": "", "seed": "", "stage": "rejected",
                   "reason": r["reason"]} for r in rejected if shard.owns(int(r["row"]))]
    n_rejected = len(error_rows)
    atomic_write_text(errors_path, _csv(error_rows, ERROR_COLUMNS))

    if subjects is not None and len(subjects) != len(ids):
        raise BatchError(f"{len(subjects)} subject numbers for {len(ids)} rows")
    if subjects is not None:
        values = hold_per_subject(values, subjects, renderer.schema.names)
    items = plan_items(ids, source_rows, shard, seed, n_per_row, subjects)
    _remove_stale_temp_files(out, items)
    todo = [item for item in items if not journal.done(item, out)]
    already = len(items) - len(todo)
    rendered = failed = 0
    names = renderer.schema.names
    desc = f"synthesize-batch {renderer.method}/{renderer.backend} shard {shard.index}/{shard.count}"
    with tqdm(total=len(items), initial=already, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start: start + chunk_size]
            images, chunk_errors = _render_isolating_failures(renderer, values, chunk)
            entries = []
            for item, image in zip(chunk, images, strict=True):
                if image is None:
                    continue
                png = encode_png(image, compress_level=6)
                atomic_write_bytes(out / item.file, png)
                entries.append({**asdict(item), "method": renderer.method, "backend": renderer.backend,
                                "model": renderer.model, "version": renderer.version,
                                "sha256": hashlib.sha256(png).hexdigest(),
                                **dict(zip(names, map(_rounded, values[item.row]), strict=True))})
            journal.append(entries)
            rendered += len(entries)
            if chunk_errors:
                failed += len(chunk_errors)
                error_rows.extend(chunk_errors)
                atomic_write_text(errors_path, _csv(error_rows, ERROR_COLUMNS))
            bar.update(len(chunk))

    manifest_csv = out / f"manifest{shard.tag}.csv"
    entries = [journal.entries[key] for key in sorted(journal.entries)]
    columns = ["row", "source_row", "id", "k", "seed", "file", "method", "backend", "model", "version",
               "sha256", *names]
    atomic_write_text(manifest_csv, _csv(entries, columns))
    return BatchResult(out, shard, len(items), already, rendered, failed, n_rejected, manifest_csv,
                       errors_path, error_rows)


def _remove_stale_temp_files(out: Path, items: Sequence[BatchItem]) -> None:
    """Delete temp files a killed run left for THIS shard's images (other shards may be writing)."""
    mine = {Path(item.file).name for item in items}
    for temp in (out / IMAGES_DIR).glob(".*.part"):
        target = temp.name[1:].rsplit(".", 2)[0]  # ".<name>.<random>.part" -> "<name>"
        if target in mine:
            temp.unlink(missing_ok=True)


def _render_isolating_failures(renderer: Renderer, values: np.ndarray, chunk: Sequence[BatchItem]
                               ) -> tuple[list[np.ndarray | None], list[dict[str, Any]]]:
    """Render a chunk at once; if that fails, row by row, so that one bad row costs only itself."""
    try:
        return list(renderer.render(values[[i.row for i in chunk]], [i.seed for i in chunk])), []
    except BackendUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is isolated and reported per row
        if len(chunk) == 1:
            item = chunk[0]
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            return [None], [{"row": item.row, "source_row": item.source_row, "id": item.id, "k": item.k,
                             "seed": item.seed, "stage": "synthesis", "reason": reason}]
    results: list[np.ndarray | None] = []
    errors: list[dict[str, Any]] = []
    for item in chunk:
        one, err = _render_isolating_failures(renderer, values, [item])
        results.extend(one)
        errors.extend(err)
    reasons = {e["reason"] for e in errors}
    if len(errors) == len(chunk) and len(reasons) == 1:
        # Every row failing the same way is the backend, not the rows (e.g. Triton went away):
        # stop, so that a retry of the run finishes the work instead of a run full of errors.
        raise BackendUnavailableError(f"every row of a chunk failed: {reasons.pop()}")
    return results, errors


def embedded_renderer(method: str, *, repository: str | os.PathLike[str] | None = None,
                      size: int | None = None, rgb: bool = False) -> Renderer:
    """``surrogate.synthesis.synthesize`` in this process (onnxruntime for gan, OpenVINO for photoreal, the
    3-D renderer)."""
    from surrogate.synthesis import GAN_MODEL, check_size, default_repository, method_schema, synthesize

    check_size(method, size)
    schema = method_schema(method, repository)
    if method == "gan":
        from surrogate.model_repo import ModelRepository

        repo = ModelRepository(repository or default_repository())
        model, version = GAN_MODEL, str(repo.latest_version(GAN_MODEL))
    elif method == "photoreal":
        from surrogate.photoreal import PHOTOREAL_MODEL, PHOTOREAL_VERSION

        model, version = PHOTOREAL_MODEL, str(PHOTOREAL_VERSION)
    else:
        from surrogate.synthesis_3d import model_version

        model, version = model_version()

    def render(values: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        return synthesize(method, values, seeds, schema=schema, repository=repository, size=size, rgb=rgb)

    return Renderer(render, schema, method, "embedded", model, version)


def triton_renderer(*, url: str, protocol: str = "grpc", repository: str | os.PathLike[str] | None = None,
                    size: int | None = None, timeout_s: float = 60.0) -> Renderer:
    """The GAN on a Triton server, through the runtime's Triton backend (same tensors, same noise)."""
    from surrogate.runtime import BackendError, TritonBackend, generate_images
    from surrogate.synthesis import resize_images

    try:
        backend = TritonBackend(url, protocol=protocol, timeout_s=timeout_s, repository=repository,
                                recon_model=None, wait_s=min(timeout_s, 30.0))
    except BackendError as exc:
        raise BackendUnavailableError(str(exc)) from exc
    info = backend.gan
    if info is None:  # pragma: no cover - the backend refuses to start without its one model
        raise BackendUnavailableError(f"Triton at {url} does not serve the generator")

    def render(values: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        # One Triton call per chunk, as before: the batch's chunk is the unit of work and of failure.
        images = generate_images(backend, values, seeds, batch_size=max(1, len(values)))
        if size is not None and images.shape[1] != size:
            images = resize_images(images, size)
        return np.ascontiguousarray(images)

    return Renderer(render, info.schema, "gan", "triton", info.name, str(info.version))


def _rounded(value: float) -> float:
    return round(float(value), 6)


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
