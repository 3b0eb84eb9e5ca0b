"""Publish (``surrogate annotate publish``): a manifest of private faces -> a crowd batch of surrogates +
a private mapping. (Not ``surrogate export``, which writes trained networks as ONNX.)

The batch folder is what goes to the crowd platform; it holds only opaque tokens, images, the
question and the platform files. Everything that links a task to a private face (id, file, attribute
values, seed) goes to the private mapping, which publishing refuses to write inside the batch.

Batch folder layout::

    BATCH/images/<token>.png        surrogates (and, with --include-raw, re-encoded consented photos)
    BATCH/labelstudio_tasks.json    Label Studio task import: [{"data": {"image": URL, "token": ...}}]
    BATCH/labelstudio_config.xml    Label Studio labelling config (Image + Choices)
    BATCH/mturk_input.csv           MTurk batch input: image_url, token (one HIT per image); written
    BATCH/mturk_template.html       only for an https:// --url-prefix (the only kind a HIT can load)
    BATCH/question.json             the question and choices (public)

Nothing published follows the manifest: the crowd order and the seed of each face are secret random
draws kept in the mapping, and every published file has the same time.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
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
    Session,
    check_unique,
    task_url,
)
from annotation.question import GoldRule, Question
from annotation.texts import load_texts
from surrogate.batch import hold_per_subject
from surrogate.imageio import ImageDecodeError, atomic_write_bytes, atomic_write_text, encode_png, load_image
from surrogate.noise import image_seeds
from surrogate.schema import AttributeSchema

SURROGATE_METHODS: tuple[str, ...] = ("gan", "3d", "photoreal")
TOKEN_BYTES = 16
# 2000-01-01T00:00:00Z on every published file: file times (and HTTP Last-Modified) say nothing of the order.
PUBLISHED_MTIME = 946_684_800

LABELSTUDIO_TASKS = "labelstudio_tasks.json"
LABELSTUDIO_CONFIG = "labelstudio_config.xml"
MTURK_INPUT = "mturk_input.csv"
MTURK_TEMPLATE = "mturk_template.html"
QUESTION_FILE = "question.json"
IMAGES_DIR = "images"
TEXTS_DIR = "texts"
# Everything publishing writes into a batch folder (--overwrite replaces only these).
BATCH_NAMES = frozenset(
    {IMAGES_DIR, TEXTS_DIR, LABELSTUDIO_TASKS, LABELSTUDIO_CONFIG, MTURK_INPUT, MTURK_TEMPLATE, QUESTION_FILE}
)


class PublishError(ValueError):
    """The batch cannot be written as asked (bad option, unreadable photo, unsafe paths)."""


class AttributeRows(Protocol):
    """What publishing needs from a manifest (``surrogate.adapters.AttributeTable`` has it)."""

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
class PublishSummary:
    """What was written, for the CLI and the caller."""

    batch_dir: Path
    mapping_path: Path
    n_private: int
    n_items: int
    n_gold: int
    methods: list[str]
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_sessions: int = 0

    @property
    def n_tasks(self) -> int:
        return self.n_items + self.n_gold


def _check_paths(batch_dir: Path, mapping_path: Path, overwrite: bool) -> None:
    batch_abs, mapping_abs = batch_dir.resolve(), mapping_path.resolve()
    if mapping_abs == batch_abs or batch_abs in mapping_abs.parents:
        raise PublishError(
            f"the private mapping {mapping_path} must not be inside the crowd batch folder {batch_dir}"
        )
    if batch_dir.exists() and not batch_dir.is_dir():
        raise PublishError(f"{batch_dir} exists and is not a folder")
    if batch_dir.exists() and any(batch_dir.iterdir()):
        if not overwrite:
            raise PublishError(f"batch folder {batch_dir} is not empty; choose a new folder (or pass --overwrite)")
        # --overwrite replaces a batch, never anything else a user put there
        foreign = sorted(p.name for p in batch_dir.iterdir() if p.name not in BATCH_NAMES)
        if foreign:
            raise PublishError(
                f"--overwrite: {batch_dir} holds files publishing does not write ({', '.join(foreign[:5])}); "
                "it replaces only a previous batch, so move them away or choose a new folder"
            )
    if mapping_path.exists() and not overwrite:
        raise PublishError(f"mapping {mapping_path} already exists; choose a new path (or pass --overwrite)")


def check_url_prefix(url_prefix: str) -> str | None:
    """Why MTurk cannot load images from ``url_prefix`` (None: it can).

    A HIT is an https page on mturk.com: a relative URL resolves against Amazon's host, and browsers
    block http:// images inside it as mixed content, so only an absolute https:// prefix works.
    """
    lowered = url_prefix.strip().lower()
    if lowered.startswith("https://") and len(lowered) > len("https://"):
        return None
    if lowered.startswith("http://"):
        return (
            f"--url-prefix {url_prefix!r} is http://: browsers block http images inside an https page "
            "(every MTurk HIT, and Label Studio served over https); serve them from an https:// address"
        )
    return (
        f"--url-prefix {url_prefix!r} is not an absolute https:// URL: a HIT resolves it against Amazon's "
        "host and loads nothing; give the https:// address the images will be served from"
    )


def _new_tokens(n: int) -> list[str]:
    tokens: set[str] = set()
    while len(tokens) < n:
        tokens.add(secrets.token_hex(TOKEN_BYTES))
    return list(tokens)


def _secret_rng() -> np.random.Generator:
    """A generator seeded from the operating system's entropy.

    The crowd order and the seed of each face come from it, not from the batch seed: anything a
    public argument reproduces (``rng_for(seed, ...)``) would let the crowd undo the shuffle. The
    outcome is kept only in the private mapping.
    """
    return np.random.default_rng(secrets.randbits(128))


def _resolve_photo(file: str | None, image_root: Path | None, private_id: str) -> Path:
    if not file:
        raise PublishError(f"--include-raw: manifest row {private_id!r} has no image file")
    path = Path(file)
    if not path.is_absolute() and image_root is not None:
        path = image_root / path
    if not path.is_file():
        raise PublishError(f"--include-raw: image of {private_id!r} not found: {path}")
    return path


def publish_batch(
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
    gold_methods: Sequence[str] | None = None,
    shuffle: bool = True,
    overwrite: bool = False,
    renderer: Renderer = render_surrogates,
    progress: bool = True,
    session_faces: int | None = None,
    texts: Mapping[str, str | os.PathLike[str] | None] | None = None,
    subjects: Sequence[str] | None = None,
) -> PublishSummary:
    """Render surrogates of every manifest row by every method and write the crowd batch + mapping.

    Seeds: the rows and gold items share the seeds ``image_seeds(seed, n_rows + n_gold)``, dealt out
    in a secret random order (the same seed for a row's gan and 3d surrogate; the methods draw from
    independent noise streams) and recorded in the mapping. The crowd order is a secret random
    permutation too: two batches published with the same arguments publish different orders. The images are
    written in that order and every published file gets the same fixed time, so neither file times
    nor inode numbers follow the manifest. The batch is assembled beside ``batch_dir`` and swapped in
    at the end, so ``overwrite`` leaves exactly the new batch.

    ``session_faces`` switches to the paper's design: the faces are dealt (secretly, at random) into
    sessions of at most that many faces; a session holds every version of its faces and every gold
    item in a secret random order, and is ONE Label Studio task / MTurk HIT that one worker labels in
    one sitting, with the instructions and consent ``texts``.

    ``subjects`` (one private subject id per row): the seeds are dealt per subject instead of per row, so
    every photo of one private person shows one surrogate person (identity-consistent methods: photoreal),
    and each subject's gender is rendered at its median over the subject's photos
    (``surrogate.batch.hold_per_subject``; the private mapping records the values rendered).
    """
    batch_dir, mapping_path = Path(batch_dir), Path(mapping_path)
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in SURROGATE_METHODS]
    if unknown:
        raise PublishError(f"unknown surrogate method(s) {unknown}; choose from {list(SURROGATE_METHODS)}")
    if not methods and not include_raw:
        raise PublishError("nothing to publish: give at least one surrogate method or --include-raw")
    if size < 16 or size > 1024:
        raise PublishError(f"--size {size} must be between 16 and 1024 pixels")
    if gold_per_rule < 0:
        raise PublishError("--gold-per-rule must be >= 0")
    if session_faces is not None and session_faces < 1:
        raise PublishError(f"--session-faces {session_faces} must be >= 1")
    if "photoreal" in methods:
        from surrogate.synthesis import PHOTOREAL_SIZES

        if size not in PHOTOREAL_SIZES:
            raise PublishError(f"--size {size}: the photoreal method renders {list(PHOTOREAL_SIZES)} px")
    if gold_rules and not methods:
        raise PublishError("gold items are surrogates: give a surrogate method (--method) to use --gold")
    gold_methods = list(methods) if gold_methods is None else list(dict.fromkeys(gold_methods))
    if set(gold_methods) - set(methods):
        raise PublishError(f"--gold-method {sorted(set(gold_methods) - set(methods))} is not one of the --method "
                           "values")
    schema = table.schema
    for rule in gold_rules:
        try:
            rule.check(question, schema)
        except ValueError as exc:
            raise PublishError(str(exc)) from exc
    ids = [str(i) for i in table.ids]
    if not ids:
        raise PublishError("the manifest has no valid rows")
    try:
        check_unique(ids, what="private id")
    except MappingError as exc:
        raise PublishError(str(exc)) from exc
    _check_paths(batch_dir, mapping_path, overwrite)
    values = np.asarray(table.values, dtype=np.float32)
    files = list(table.files) if getattr(table, "files", None) is not None else [None] * len(ids)
    root = Path(image_root) if image_root is not None else None
    photos = [_resolve_photo(files[i], root, ids[i]) for i in range(len(ids))] if include_raw else []
    warnings = []
    mturk_problem = check_url_prefix(url_prefix)
    if mturk_problem:
        warnings.append(f"{mturk_problem}; MTurk files not written (Label Studio files are)")

    secret = _secret_rng()
    gold_values = [rule.values(schema, k) for rule in gold_rules for k in range(gold_per_rule)]
    gold_labels = [rule.label for rule in gold_rules for _ in range(gold_per_rule)]
    if subjects is not None and len(subjects) != len(ids):
        raise PublishError(f"{len(subjects)} subject ids for {len(ids)} manifest rows")
    if subjects is not None:  # one person, one surrogate person: their gender held at the median
        values = hold_per_subject(values, subjects, schema.names)
    people = list(dict.fromkeys(subjects)) if subjects is not None else ids
    seeds = [int(s) for s in secret.permutation(image_seeds(seed, len(people) + len(gold_values)))]
    if subjects is None:
        row_seeds = seeds[: len(ids)]
    else:
        seed_of = dict(zip(people, seeds, strict=False))
        row_seeds = [seed_of[s] for s in subjects]
    gold_seeds = seeds[len(people) :]

    n_tasks = len(ids) * (len(methods) + int(include_raw)) + len(gold_values) * len(gold_methods)
    tokens = iter(_new_tokens(n_tasks))
    # Encoded PNGs wait in memory so that they reach the disk in crowd order, not in manifest order.
    rendered: list[tuple[MappingEntry, bytes]] = []
    bar = tqdm(total=n_tasks, desc="publish", unit="img", disable=not progress)

    def render(
        method: str,
        rows: np.ndarray,
        row_seeds_: Sequence[int],
        make_entry: Callable[[int, str], MappingEntry],
    ) -> None:
        for start in range(0, len(rows), 64):
            chunk = rows[start : start + 64]
            images = renderer(method, schema, chunk, row_seeds_[start : start + 64], size)
            for offset, image in enumerate(images):
                rendered.append((make_entry(start + offset, next(tokens)), encode_png(image, compress_level=6)))
                bar.update(1)

    try:
        for method in methods:
            render(
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
            if gold_values and method in gold_methods:
                render(
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
                raise PublishError(f"--include-raw: {ids[i]!r}: {exc}") from exc
            entry = MappingEntry(
                token=next(tokens),
                kind=KIND_ITEM,
                method="raw",
                attributes=tuple(map(float, values[i])),
                private_id=ids[i],
                file=files[i],
            )
            rendered.append((entry, encode_png(image, compress_level=6)))
            bar.update(1)
    finally:
        bar.close()

    order = secret.permutation(len(rendered)) if shuffle else np.arange(len(rendered))
    rendered = [rendered[i] for i in order]
    entries = [entry for entry, _ in rendered]
    sessions = _make_sessions(entries, session_faces, secret) if session_faces else []
    try:
        session_texts = (
            load_texts(
                dict(texts or {}),
                question=question.text,
                choices=", ".join(question.choices),
                n_images=max(len(x.tokens) for x in sessions),
                minutes=max(1, round(max(len(x.tokens) for x in sessions) * 3.5 / 60)),
            )
            if sessions
            else {}
        )
    except ValueError as exc:
        raise PublishError(str(exc)) from exc
    mapping = PrivateMapping(
        question=question,
        schema=schema,
        entries=entries,
        batch_seed=seed,
        url_prefix=url_prefix,
        image_size=size,
        sessions=sessions,
    )
    staging = batch_dir.parent / f".{batch_dir.name}.partial-{secrets.token_hex(4)}"
    try:
        (staging / IMAGES_DIR).mkdir(parents=True)
        for entry, data in rendered:
            atomic_write_bytes(staging / IMAGES_DIR / f"{entry.token}.png", data)
        if sessions:
            written = write_session_files(
                staging, sessions, question, url_prefix, session_texts, mturk=mturk_problem is None
            )
        else:
            written = write_platform_files(
                staging, [e.token for e in entries], question, url_prefix, mturk=mturk_problem is None
            )
        _fix_times(staging)
        _swap_in(staging, batch_dir)
        mapping.write(mapping_path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return PublishSummary(
        batch_dir=batch_dir,
        mapping_path=mapping_path,
        n_private=len(ids),
        n_items=sum(e.kind == KIND_ITEM for e in entries),
        n_gold=sum(e.kind == KIND_GOLD for e in entries),
        methods=([*methods, "raw"] if include_raw else list(methods)),
        files=[*(batch_dir / p.relative_to(staging) for p in written), mapping_path],
        warnings=warnings,
        n_sessions=len(sessions),
    )


def _make_sessions(
    entries: Sequence[MappingEntry], faces_per_session: int, secret: np.random.Generator
) -> list[Session]:
    """Deal the faces at random into balanced sessions; each gets all versions of its faces + all gold."""
    faces = sorted({e.private_id for e in entries if e.kind == KIND_ITEM and e.private_id is not None})
    faces = [faces[i] for i in secret.permutation(len(faces))]
    n_sessions = -(-len(faces) // faces_per_session)
    gold = [e.token for e in entries if e.kind == KIND_GOLD]
    sessions = []
    for group in np.array_split(np.asarray(faces, dtype=object), n_sessions):
        members = set(group)
        tokens = [e.token for e in entries if e.kind == KIND_ITEM and e.private_id in members] + gold
        order = secret.permutation(len(tokens))
        sessions.append(Session(secrets.token_hex(TOKEN_BYTES), tuple(tokens[i] for i in order)))
    return sessions


def _fix_times(folder: Path) -> None:
    """Give every file and folder under ``folder`` the same time (web servers publish it)."""
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (PUBLISHED_MTIME, PUBLISHED_MTIME), follow_symlinks=False)


def _swap_in(staging: Path, batch_dir: Path) -> None:
    """Replace ``batch_dir`` (absent, empty or a previous batch, see ``_check_paths``) by ``staging``.

    The previous batch is moved aside first and put back if the swap fails, so a failed publish never
    leaves the user with neither batch.
    """
    previous = batch_dir.parent / f".{batch_dir.name}.previous-{secrets.token_hex(4)}"
    had_previous = batch_dir.exists()
    if had_previous:
        os.replace(batch_dir, previous)
    try:
        os.replace(staging, batch_dir)
    except BaseException:
        if had_previous:
            os.replace(previous, batch_dir)
        raise
    os.utime(batch_dir, (PUBLISHED_MTIME, PUBLISHED_MTIME))
    if had_previous:
        shutil.rmtree(previous)


# -- platform files ---------------------------------------------------------------------------------
def write_platform_files(
    batch_dir: Path, tokens: Sequence[str], question: Question, url_prefix: str, *, mturk: bool = True
) -> list[Path]:
    """Write the Label Studio (and, when ``mturk``, the MTurk) files for ``tokens`` in crowd order."""
    tasks = [{"data": {"image": task_url(url_prefix, t), "token": t}} for t in tokens]
    out = {
        LABELSTUDIO_TASKS: json.dumps(tasks, indent=1) + "\n",
        LABELSTUDIO_CONFIG: labelstudio_config(question),
        QUESTION_FILE: json.dumps(
            {"question": question.to_dict(), "n_tasks": len(tokens), "image_format": "png"}, indent=1
        )
        + "\n",
    }
    if mturk:
        out[MTURK_INPUT] = _mturk_input_csv(tokens, url_prefix)
        out[MTURK_TEMPLATE] = mturk_template(question)
    paths = []
    for name, text in out.items():
        atomic_write_text(batch_dir / name, text)
        paths.append(batch_dir / name)
    return paths


def write_session_files(
    batch_dir: Path,
    sessions: Sequence[Session],
    question: Question,
    url_prefix: str,
    texts: Mapping[str, str],
    *,
    mturk: bool = True,
) -> list[Path]:
    """The platform files of a session batch: one Label Studio task / MTurk HIT per session."""
    slots = max(len(x.tokens) for x in sessions)
    tasks = [
        {
            "data": {
                "session": x.id,
                "images": [{"image": task_url(url_prefix, t), "token": t} for t in x.tokens],
            }
        }
        for x in sessions
    ]
    out = {
        LABELSTUDIO_TASKS: json.dumps(tasks, indent=1) + "\n",
        LABELSTUDIO_CONFIG: labelstudio_session_config(question),
        QUESTION_FILE: json.dumps(
            {
                "question": question.to_dict(),
                "n_sessions": len(sessions),
                "images_per_session": slots,
                "image_format": "png",
            },
            indent=1,
        )
        + "\n",
        **{f"{TEXTS_DIR}/{name}.md": text for name, text in texts.items()},
    }
    if mturk:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["session", *(f"image_url_{k}" for k in range(slots)), *(f"token_{k}" for k in range(slots))])
        for x in sessions:
            padding = [""] * (slots - len(x.tokens))
            writer.writerow([x.id, *(task_url(url_prefix, t) for t in x.tokens), *padding, *x.tokens, *padding])
        out[MTURK_INPUT] = buffer.getvalue()
        out[MTURK_TEMPLATE] = mturk_session_template(question, slots, texts)
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


def labelstudio_session_config(question: Question) -> str:
    """Label Studio config of a session task: every image of ``$images`` with its own required answer.

    Label Studio's Repeater names each answer ``<question>_<index>`` (index into ``data.images``).
    """
    choices = "\n".join(f"      <Choice value={quoteattr(c)}/>" for c in question.choices)
    return (
        "<View>\n"
        f"  <Header value={quoteattr(question.text)}/>\n"
        '  <Repeater on="$images" indexFlag="{{idx}}" mode="pagination">\n'
        '    <Image name="image_{{idx}}" value="$images[{{idx}}].image"/>\n'
        f'    <Choices name="{question.name}_{{{{idx}}}}" toName="image_{{{{idx}}}}" choice="single-radio" '
        'required="true">\n'
        f"{choices}\n"
        "    </Choices>\n"
        "  </Repeater>\n"
        "</View>\n"
    )


def _paragraphs(text: str) -> str:
    """Plain paragraphs and ``- `` bullet lists of a Markdown text as HTML (escaped)."""
    blocks = []
    for block in filter(str.strip, text.split("\n\n")):
        lines = [line.strip() for line in block.strip().splitlines()]
        if all(line.startswith("- ") for line in lines):
            items = "".join(f"<li>{html_escape(line[2:])}</li>" for line in lines)
            blocks.append(f"    <ul>{items}</ul>")
        else:
            blocks.append(f"    <p>{html_escape(' '.join(lines))}</p>")
    return "\n".join(blocks)


def mturk_session_template(question: Question, slots: int, texts: Mapping[str, str]) -> str:
    """An MTurk template of one session: instructions, consent, then ``slots`` images, each answered.

    Inputs ``${image_url_K}`` come from mturk_input.csv; a shorter session leaves some empty, and
    their blocks are hidden (and not asked). Answers: ``<question>.slot<K>.option_<N>.<choice>``.
    """
    blocks = "".join(
        f'  <div class="slot" data-image="${{image_url_{k}}}">\n'
        f'    <p>{k + 1}. <img src="${{image_url_{k}}}" alt="face {k + 1}" style="width: 256px; height: auto;"></p>\n'
        f"  {mturk_radio_group(question, f'{question.name}.slot{k}')}"
        "  </div>\n"
        for k in range(slots)
    )
    return (
        "<!-- crowd-html-elements.js is MTurk's own component library, required by <crowd-form>;\n"
        "     the template loads no other script. ${image_url_K} are filled from mturk_input.csv. -->\n"
        '<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>\n'
        '<crowd-form answer-format="flatten-objects">\n'
        "  <section>\n    <h3>Instructions</h3>\n"
        f"{_paragraphs(texts.get('instructions', ''))}\n  </section>\n"
        "  <section>\n    <h3>Consent</h3>\n"
        f"{_paragraphs(texts.get('consent', ''))}\n"
        '    <crowd-checkbox name="consent" required>I agree to take part</crowd-checkbox>\n  </section>\n'
        f"  <p><strong>{xml_escape(question.text)}</strong></p>\n"
        f"{blocks}"
        "</crowd-form>\n"
        "<script>\n"
        "  // a shorter session leaves some inputs empty: hide those blocks (the answer check skips them)\n"
        "  document.querySelectorAll('.slot').forEach(function (slot) {\n"
        "    if (!slot.getAttribute('data-image')) { slot.hidden = true; }\n"
        "  });\n"
        "</script>\n"
        f"{_MTURK_REQUIRE_ANSWERS}"
    )


def mturk_radio_group(question: Question, field: str) -> str:
    """One ``<crowd-radio-group>`` whose answer MTurk returns as ``<field>.option_<N>`` -> {choice: bool}.

    AWS documents the group's output as ``[{"<button name>": {"<button value>": true|false}, ...}]``:
    with ``answer-format="flatten-objects"`` that is one column ``Answer.<field>.option_<N>.<choice>``
    per button, otherwise one ``Answer.taskAnswers`` JSON column; the importer reads both.
    """
    buttons = "\n".join(
        f'    <crowd-radio-button name="{field}.option_{i}" value={quoteattr(c)}>'
        f"{html_escape(c)}</crowd-radio-button>"
        for i, c in enumerate(question.choices)
    )
    return f'  <crowd-radio-group data-answer="{field}">\n{buttons}\n  </crowd-radio-group>\n'


# crowd-radio-group has no 'required' attribute (AWS documents none), so without this check a worker
# could submit an empty HIT. Groups inside a hidden block (an unused session slot) are not asked.
_MTURK_REQUIRE_ANSWERS = """<script>
  document.querySelector('crowd-form').addEventListener('submit', function (event) {
    var unticked = document.querySelector('crowd-checkbox[required]:not([checked])');
    if (unticked && !unticked.checked) {
      event.preventDefault();
      unticked.scrollIntoView();
      alert('Please read the consent statement and tick the box to take part.');
      return;
    }
    var groups = document.querySelectorAll('crowd-radio-group[data-answer]');
    for (var i = 0; i < groups.length; i++) {
      if (groups[i].closest('[hidden]')) { continue; }
      var buttons = groups[i].querySelectorAll('crowd-radio-button');
      var answered = Array.prototype.some.call(buttons, function (b) { return b.checked; });
      if (!answered) {
        event.preventDefault();
        groups[i].scrollIntoView();
        alert('Please answer every question before you submit.');
        return;
      }
    }
  });
</script>
"""


def mturk_template(question: Question) -> str:
    """An MTurk crowd-HTML template of one image and one required single-choice answer.

    The only external script is MTurk's own crowd-html-elements.js, which ``<crowd-form>`` requires
    (it submits the answers); the inline script refuses a submit without an answer. No other
    third-party script, font or tracker is loaded.
    """
    return (
        "<!-- crowd-html-elements.js is MTurk's own component library, required by <crowd-form>;\n"
        "     the template loads no other script. ${image_url} is filled from mturk_input.csv. -->\n"
        '<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>\n'
        '<crowd-form answer-format="flatten-objects">\n'
        f"  <p><strong>{xml_escape(question.text)}</strong></p>\n"
        '  <p><img src="${image_url}" alt="face to label" style="width: 256px; height: auto;"></p>\n'
        f"{mturk_radio_group(question, question.name)}"
        "</crowd-form>\n"
        f"{_MTURK_REQUIRE_ANSWERS}"
    )
