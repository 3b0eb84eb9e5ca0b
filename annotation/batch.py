"""Export: a manifest of private faces -> a crowd batch of surrogates + a private mapping.

The batch folder is what goes to the crowd platform; it holds only opaque tokens, images, the
question and the platform files. Everything that links a task to a private face (id, file, attribute
values, seed) goes to the private mapping, which the exporter refuses to write inside the batch.

Batch folder layout::

    BATCH/images/<token>.png        surrogates (and, with --include-raw, re-encoded consented photos)
    BATCH/labelstudio_tasks.json    Label Studio task import: [{"data": {"image": URL, "token": ...}}]
    BATCH/labelstudio_config.xml    Label Studio labelling config (Image + Choices)
    BATCH/mturk_input.csv           MTurk batch input: image_url, token (one HIT per image)
    BATCH/mturk_template.html       MTurk crowd-HTML question template
    BATCH/question.json             the question and choices (public)
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape as html_escape
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import numpy as np
from tqdm import tqdm

from annotation.mapping import (
    KIND_GOLD,
    KIND_ITEM,
    MappingEntry,
    MappingError,
    PrivateMapping,
    check_unique,
    task_url,
)
from annotation.question import GoldRule, Question
from surrogate.imageio import ImageDecodeError, atomic_write_text, load_image, save_png
from surrogate.noise import STREAM_TASK_ORDER, image_seeds, rng_for
from surrogate.schema import AttributeSchema

SURROGATE_METHODS: tuple[str, ...] = ("gan", "3d")
TOKEN_BYTES = 16
# Stream id for the task order within surrogate.noise's seeded streams (surrogate streams use 0-2).
_STREAM_TASK_ORDER = STREAM_TASK_ORDER

LABELSTUDIO_TASKS = "labelstudio_tasks.json"
LABELSTUDIO_CONFIG = "labelstudio_config.xml"
MTURK_INPUT = "mturk_input.csv"
MTURK_TEMPLATE = "mturk_template.html"
QUESTION_FILE = "question.json"
IMAGES_DIR = "images"


class ExportError(ValueError):
    """The batch cannot be written as asked (bad option, unreadable photo, unsafe paths)."""


class AttributeRows(Protocol):
    """What the exporter needs from a manifest (``surrogate.adapters.AttributeTable`` has it)."""

    schema: AttributeSchema
    ids: list[str]
    files: list[str | None]
    values: np.ndarray


Renderer = Callable[[str, AttributeSchema, np.ndarray, Sequence[int], int], np.ndarray]


def render_surrogates(
    method: str, schema: AttributeSchema, values: np.ndarray, seeds: Sequence[int], size: int
) -> np.ndarray:
    """Surrogates of ``values`` (natural units, ``schema`` order) by ``method``: uint8 (N, H, W)[, 3]."""
    from surrogate.synthesis import synthesize

    return synthesize(method, values, seeds, schema=schema, size=size)


def load_manifest(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    schema: AttributeSchema | None = None,
    min_confidence: float = 0.75,
) -> Any:
    """Read a manifest of private faces (any adapter format) as an ``AttributeTable``."""
    from surrogate.adapters import read_attributes
    from surrogate.schema import DEFAULT_SCHEMA

    return read_attributes(
        path, format=format, schema=schema or DEFAULT_SCHEMA, min_confidence=min_confidence
    )


@dataclass
class ExportSummary:
    """What was written, for the CLI and the caller."""

    batch_dir: Path
    mapping_path: Path
    n_private: int
    n_items: int
    n_gold: int
    methods: list[str]
    files: list[Path] = field(default_factory=list)

    @property
    def n_tasks(self) -> int:
        return self.n_items + self.n_gold


def _check_paths(batch_dir: Path, mapping_path: Path, overwrite: bool) -> None:
    batch_abs, mapping_abs = batch_dir.resolve(), mapping_path.resolve()
    if mapping_abs == batch_abs or batch_abs in mapping_abs.parents:
        raise ExportError(
            f"the private mapping {mapping_path} must not be inside the crowd batch folder {batch_dir}"
        )
    if batch_dir.exists() and not batch_dir.is_dir():
        raise ExportError(f"{batch_dir} exists and is not a folder")
    if batch_dir.exists() and any(batch_dir.iterdir()) and not overwrite:
        raise ExportError(f"batch folder {batch_dir} is not empty; choose a new folder (or pass --overwrite)")
    if mapping_path.exists() and not overwrite:
        raise ExportError(f"mapping {mapping_path} already exists; choose a new path (or pass --overwrite)")


def _new_tokens(n: int) -> list[str]:
    tokens: set[str] = set()
    while len(tokens) < n:
        tokens.add(secrets.token_hex(TOKEN_BYTES))
    return list(tokens)


def _resolve_photo(file: str | None, image_root: Path | None, private_id: str) -> Path:
    if not file:
        raise ExportError(f"--include-raw: manifest row {private_id!r} has no image file")
    path = Path(file)
    if not path.is_absolute() and image_root is not None:
        path = image_root / path
    if not path.is_file():
        raise ExportError(f"--include-raw: image of {private_id!r} not found: {path}")
    return path


def export_batch(
    table: AttributeRows,
    batch_dir: str | os.PathLike[str],
    mapping_path: str | os.PathLike[str],
    *,
    question: Question,
    methods: Sequence[str] = ("3d",),
    include_raw: bool = False,
    image_root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    size: int = 128,
    url_prefix: str = "images/",
    gold_rules: Sequence[GoldRule] = (),
    gold_per_rule: int = 2,
    shuffle: bool = True,
    overwrite: bool = False,
    renderer: Renderer = render_surrogates,
    progress: bool = True,
) -> ExportSummary:
    """Render surrogates of every manifest row by every method and write the crowd batch + mapping.

    Seeds: row i gets ``image_seeds(seed, n_rows + n_gold)[i]`` (the same seed for its gan and 3d
    surrogate; the methods draw from independent noise streams); gold item j the seed after the rows.
    """
    batch_dir, mapping_path = Path(batch_dir), Path(mapping_path)
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in SURROGATE_METHODS]
    if unknown:
        raise ExportError(f"unknown surrogate method(s) {unknown}; choose from {list(SURROGATE_METHODS)}")
    if not methods and not include_raw:
        raise ExportError("nothing to export: give at least one surrogate method or --include-raw")
    if size < 16 or size > 1024:
        raise ExportError(f"--size {size} must be between 16 and 1024 pixels")
    if gold_per_rule < 0:
        raise ExportError("--gold-per-rule must be >= 0")
    if gold_rules and not methods:
        raise ExportError("gold items are surrogates: give a surrogate method (--method) to use --gold")
    schema = table.schema
    for rule in gold_rules:
        try:
            rule.check(question, schema)
        except ValueError as exc:
            raise ExportError(str(exc)) from exc
    ids = [str(i) for i in table.ids]
    if not ids:
        raise ExportError("the manifest has no valid rows")
    try:
        check_unique(ids, what="private id")
    except MappingError as exc:
        raise ExportError(str(exc)) from exc
    _check_paths(batch_dir, mapping_path, overwrite)
    values = np.asarray(table.values, dtype=np.float32)
    files = list(table.files) if getattr(table, "files", None) is not None else [None] * len(ids)
    root = Path(image_root) if image_root is not None else None
    photos = [_resolve_photo(files[i], root, ids[i]) for i in range(len(ids))] if include_raw else []

    gold_values = [rule.values(schema, k) for rule in gold_rules for k in range(gold_per_rule)]
    gold_labels = [rule.label for rule in gold_rules for _ in range(gold_per_rule)]
    seeds = image_seeds(seed, len(ids) + len(gold_values))
    row_seeds, gold_seeds = seeds[: len(ids)], seeds[len(ids) :]

    n_tasks = len(ids) * (len(methods) + int(include_raw)) + len(gold_values) * len(methods)
    tokens = iter(_new_tokens(n_tasks))
    images_dir = batch_dir / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    entries: list[MappingEntry] = []
    bar = tqdm(total=n_tasks, desc="export", unit="img", disable=not progress)

    def write_images(
        method: str,
        rows: np.ndarray,
        row_seeds_: Sequence[int],
        make_entry: Callable[[int, str], MappingEntry],
    ) -> None:
        for start in range(0, len(rows), 64):
            chunk = rows[start : start + 64]
            images = renderer(method, schema, chunk, row_seeds_[start : start + 64], size)
            for offset, image in enumerate(images):
                entry = make_entry(start + offset, next(tokens))
                save_png(images_dir / f"{entry.token}.png", image)
                entries.append(entry)
                bar.update(1)

    try:
        for method in methods:
            write_images(
                method,
                values,
                row_seeds,
                lambda i, tok, m=method: MappingEntry(
                    token=tok,
                    kind=KIND_ITEM,
                    method=m,
                    attributes=tuple(map(float, values[i])),
                    private_id=ids[i],
                    file=files[i],
                    seed=row_seeds[i],
                ),
            )
            if gold_values:
                write_images(
                    method,
                    np.asarray(gold_values, np.float32),
                    gold_seeds,
                    lambda j, tok, m=method: MappingEntry(
                        token=tok,
                        kind=KIND_GOLD,
                        method=m,
                        attributes=tuple(gold_values[j]),
                        seed=gold_seeds[j],
                        gold_label=gold_labels[j],
                    ),
                )
        for i, photo in enumerate(photos):
            try:
                # Decoded and re-encoded: EXIF (camera, GPS, names) and the file name never leave.
                image = load_image(photo)
            except ImageDecodeError as exc:
                raise ExportError(f"--include-raw: {ids[i]!r}: {exc}") from exc
            entry = MappingEntry(
                token=next(tokens),
                kind=KIND_ITEM,
                method="raw",
                attributes=tuple(map(float, values[i])),
                private_id=ids[i],
                file=files[i],
            )
            save_png(images_dir / f"{entry.token}.png", image)
            entries.append(entry)
            bar.update(1)
    finally:
        bar.close()

    order = np.arange(len(entries))
    if shuffle:
        order = rng_for(seed, _STREAM_TASK_ORDER).permutation(len(entries))
    entries = [entries[i] for i in order]
    mapping = PrivateMapping(
        question=question,
        schema=schema,
        entries=entries,
        batch_seed=seed,
        url_prefix=url_prefix,
        image_size=size,
    )
    written = write_platform_files(batch_dir, [e.token for e in entries], question, url_prefix)
    mapping.write(mapping_path)
    return ExportSummary(
        batch_dir=batch_dir,
        mapping_path=mapping_path,
        n_private=len(ids),
        n_items=sum(e.kind == KIND_ITEM for e in entries),
        n_gold=sum(e.kind == KIND_GOLD for e in entries),
        methods=([*methods, "raw"] if include_raw else list(methods)),
        files=[*written, mapping_path],
    )


# -- platform files ---------------------------------------------------------------------------------
def write_platform_files(
    batch_dir: Path, tokens: Sequence[str], question: Question, url_prefix: str
) -> list[Path]:
    """Write the Label Studio and MTurk files for ``tokens`` (in crowd order) into ``batch_dir``."""
    tasks = [{"data": {"image": task_url(url_prefix, t), "token": t}} for t in tokens]
    out = {
        LABELSTUDIO_TASKS: json.dumps(tasks, indent=1) + "\n",
        LABELSTUDIO_CONFIG: labelstudio_config(question),
        MTURK_INPUT: _mturk_input_csv(tokens, url_prefix),
        MTURK_TEMPLATE: mturk_template(question),
        QUESTION_FILE: json.dumps(
            {"question": question.to_dict(), "n_tasks": len(tokens), "image_format": "png"}, indent=1
        )
        + "\n",
    }
    paths = []
    for name, text in out.items():
        atomic_write_text(batch_dir / name, text)
        paths.append(batch_dir / name)
    return paths


def _mturk_input_csv(tokens: Sequence[str], url_prefix: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_url", "token"])
    for t in tokens:
        writer.writerow([task_url(url_prefix, t), t])
    return buffer.getvalue()


def labelstudio_config(question: Question) -> str:
    """A Label Studio labelling config: the image, the question, one single-choice answer."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in question.choices)
    return (
        "<View>\n"
        f"  <Header value={quoteattr(question.text)}/>\n"
        '  <Image name="image" value="$image"/>\n'
        f'  <Choices name={quoteattr(question.name)} toName="image" choice="single-radio" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def mturk_template(question: Question) -> str:
    """An MTurk crowd-HTML template; answers arrive as ``Answer.<name>.option_<N>`` = true/false.

    The only script is MTurk's own crowd-html-elements.js, which ``<crowd-form>`` requires (it submits
    the answers); no other third-party script, font or tracker is loaded.
    """
    buttons = "\n".join(
        f'    <crowd-radio-button name="{question.name}.option_{i}" value={quoteattr(c)}>'
        f"{html_escape(c)}</crowd-radio-button>"
        for i, c in enumerate(question.choices)
    )
    return (
        "<!-- crowd-html-elements.js is MTurk's own component library, required by <crowd-form>;\n"
        "     the template loads no other script. ${image_url} is filled from mturk_input.csv. -->\n"
        '<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>\n'
        '<crowd-form answer-format="flatten-objects">\n'
        f"  <p><strong>{xml_escape(question.text)}</strong></p>\n"
        '  <p><img src="${image_url}" alt="face to label" style="width: 256px; height: auto;"></p>\n'
        "  <crowd-radio-group>\n"
        f"{buttons}\n"
        "  </crowd-radio-group>\n"
        "</crowd-form>\n"
    )
