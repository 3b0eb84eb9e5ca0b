"""The portrait corpus: photoreal faces of nobody, labelled by MediaPipe, as GAN and extractor training data.

``surrogate data portraits --n N --out DIR --seed S`` builds it in three resumable stages:

1. render: row i draws (portrait seed, roll, edit coefficients) from ``indexed_rng(S, STREAM, i)``; its w is
   the portrait seed's truncated w, moved along the attribute directions (``--directions``, fitted by
   ``surrogate data portrait-directions``) by the coefficients; the 1024 px portrait is rotated in the image
   plane by the roll (FFHQ's alignment removed roll, so this is how the corpus gets any) and kept as a 512 px
   JPEG frame. Chunks of ``CHUNK`` rows are written whole (frames first, then the chunk's latent file).
2. label: MediaPipe FaceLandmarker reads each frame (``surrogate.landmarks``): 478 landmarks, 52
   blendshapes, the head pose; the frame is cut to the project's framing (``surrogate.face_align``) at the
   requested size and channels.
3. finish: the canonical attribute CSV (``attributes.csv``, what ``surrogate train gan --data DIR
   --attributes DIR/attributes.csv`` reads), ``latents.npz`` (every row's seed, w, edits and roll, so every
   face can be regenerated), ``corpus.json`` (counts, coverage, licence).

Workers split the chunks (chunk c belongs to worker c % W); every stage skips finished chunks, so a killed
run continues where it stopped and the result does not depend on W or on interruptions.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from surrogate.assets import PORTRAIT_GENERATOR
from surrogate.imageio import atomic_open, atomic_write_text
from surrogate.noise import indexed_rng
from surrogate.portrait_directions import AttributeDirections, GenderBoundary
from surrogate.schema import DEFAULT_SCHEMA

STREAM_PORTRAIT_CORPUS = 103  # beside noise.STREAM_SYNTH_* (the synthetic renders' rows)
CHUNK = 32
FRAME_SIDE = 512
FRAME_QUALITY = 95
CORPUS_VERSION = 1


class CorpusError(ValueError):
    """A corpus folder that contradicts the options, or one with nothing labelled yet."""


@dataclass(frozen=True)
class CorpusOptions:
    seed: int
    n: int
    psi: float = 0.7
    roll_sd: float = 10.0  # degrees; clipped to +-ROLL_LIMIT
    edit_scale: float = 1.0  # multiplies every edit coefficient (0: no edits)
    directions_sha256: str = ""
    version: int = CORPUS_VERSION


ROLL_LIMIT = 30.0


def row_draws(options: CorpusOptions, row: int, k: int) -> tuple[int, float, np.ndarray]:
    """Row ``row``'s portrait seed, roll (degrees) and k standard-normal edit draws."""
    rng = indexed_rng(options.seed, STREAM_PORTRAIT_CORPUS, row)
    portrait_seed = int(rng.integers(0, 2**62))
    roll = float(np.clip(rng.normal(0.0, options.roll_sd), -ROLL_LIMIT, ROLL_LIMIT))
    draws = rng.standard_normal(16)[:k]  # always 16 drawn, so a row does not change with K <= 16
    return portrait_seed, roll, draws


def rotate_frame(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the image centre; positive = the head's top towards the image's right (clockwise)."""
    if degrees == 0.0:
        return image
    import cv2

    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -degrees, 1.0)  # OpenCV: positive = counter-clockwise
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _chunks(n: int) -> list[range]:
    return [range(s, min(n, s + CHUNK)) for s in range(0, n, CHUNK)]


def row_id(row: int) -> str:
    return f"{row:06d}"


def check_options(out: Path, options: CorpusOptions) -> None:
    """Write corpus.options.json on first use; refuse a folder made with other options (n may grow)."""
    path = out / "options.json"
    mine = asdict(options)
    if path.exists():
        theirs = json.loads(path.read_text())
        differing = sorted(k for k in mine if k != "n" and theirs.get(k) != mine[k])
        if differing:
            raise CorpusError(
                f"{out} was built with other options ({', '.join(f'{k}={theirs.get(k)!r}' for k in differing)}); "
                "use another --out or the same options")
        if mine["n"] <= theirs.get("n", 0):
            return
    atomic_write_text(path, json.dumps(mine, indent=2) + "\n")


def render_stage(out: Path, options: CorpusOptions, directions: AttributeDirections | None, *, worker: int = 0,
                 workers: int = 1, batch: int = 4, threads: int = 0, progress: bool = True) -> int:
    """Render this worker's missing chunks; returns how many rows it rendered."""
    from PIL import Image
    from tqdm import tqdm

    from surrogate.portraits import PortraitGenerator

    todo = [c for i, c in enumerate(_chunks(options.n))
            if i % workers == worker and not (out / "latents" / f"{c.start:06d}.npz").exists()]
    if not todo:
        return 0
    generator = PortraitGenerator(psi=options.psi, batch=batch, threads=threads)
    k = 0 if directions is None else len(directions.names)
    done = 0
    with tqdm(total=sum(len(c) for c in todo), desc=f"render {worker}/{workers}", unit="face",
              disable=not progress, position=worker) as bar:
        for chunk in todo:
            draws = [row_draws(options, r, k) for r in chunk]
            seeds = [d[0] for d in draws]
            base = generator.w(seeds)
            coefficients = np.zeros((len(chunk), k), np.float32)
            if directions is not None:
                draws_k = np.stack([d[2] for d in draws]).astype(np.float32)
                coefficients = (draws_k * directions.spread + directions.shift) * np.float32(options.edit_scale)
            w = base + coefficients @ directions.vectors if directions is not None else base
            frames = generator.render(w, side=FRAME_SIDE)
            rolls = np.array([d[1] for d in draws], np.float32)
            for row, frame, roll in zip(chunk, frames, rolls, strict=True):
                with atomic_open(out / "frames" / f"{row_id(row)}.jpg") as handle:
                    Image.fromarray(rotate_frame(frame, float(roll))).save(handle, format="JPEG",
                                                                           quality=FRAME_QUALITY)
            with atomic_open(out / "latents" / f"{chunk.start:06d}.npz") as handle:
                np.savez(handle, rows=np.array(list(chunk)), seeds=np.array(seeds, np.int64), w=w.astype(np.float32),
                         coefficients=coefficients, roll=rolls,
                         direction_names=np.array(directions.names if directions else (), dtype=str))
            done += len(chunk)
            bar.update(len(chunk))
    return done


def images_dir(size: int, channels: int) -> str:
    """The crops folder of one size: images64g (grey), images128c (colour)."""
    return f"images{size}{'g' if channels == 1 else 'c'}"


def label_stage(out: Path, options: CorpusOptions, *, size: int = 64, channels: int = 1, worker: int = 0,
                workers: int = 1, progress: bool = True) -> int:
    """Read every rendered chunk's frames with MediaPipe and cut the crops; returns rows labelled."""
    from PIL import Image
    from tqdm import tqdm

    from surrogate.face_align import crop_square, landmark_frame, to_gray
    from surrogate.imageio import encode_png
    from surrogate.landmarks import FaceLandmarks

    crops = out / images_dir(size, channels)
    todo = []
    for i, chunk in enumerate(_chunks(options.n)):
        if i % workers != worker or not (out / "latents" / f"{chunk.start:06d}.npz").exists():
            continue
        labelled = (out / "labels" / f"{chunk.start:06d}.npz").exists()
        cut = all((crops / f"{row_id(r)}.png").exists() for r in chunk) or (
            labelled and _all_unfound(out / "labels" / f"{chunk.start:06d}.npz", crops, chunk))
        if not (labelled and cut):
            todo.append((chunk, labelled))
    if not todo:
        return 0
    reader = FaceLandmarks()
    done = 0
    with tqdm(total=sum(len(c) for c, _ in todo), desc=f"label {worker}/{workers}", unit="face",
              disable=not progress, position=worker) as bar:
        for chunk, labelled in todo:
            label_path = out / "labels" / f"{chunk.start:06d}.npz"
            if labelled:
                with np.load(label_path) as saved:
                    found, boxes = saved["found"], saved["box"]
            else:
                found = np.zeros(len(chunk), bool)
                landmarks = np.zeros((len(chunk), 478, 3), np.float32)
                blend = np.zeros((len(chunk), 52), np.float32)
                matrix = np.zeros((len(chunk), 4, 4), np.float32)
                pose = np.full((len(chunk), 3), np.nan, np.float32)
                boxes = np.zeros((len(chunk), 3), np.float32)
            for j, row in enumerate(chunk):
                frame = np.asarray(Image.open(out / "frames" / f"{row_id(row)}.jpg").convert("RGB"))
                if not labelled:
                    reading = reader.read(frame)
                    if reading is not None:
                        found[j] = True
                        landmarks[j], blend[j], matrix[j] = reading.landmarks, reading.blendshapes, reading.matrix
                        pose[j] = reading.pose
                        boxes[j] = landmark_frame(reading.landmarks)
                if found[j]:
                    crop = crop_square(to_gray(frame) if channels == 1 else frame, *boxes[j], size)
                    with atomic_open(crops / f"{row_id(row)}.png") as handle:
                        handle.write(encode_png(crop, compress_level=6))
            if not labelled:
                with atomic_open(label_path) as handle:
                    np.savez_compressed(handle, rows=np.array(list(chunk)), found=found,
                                        landmarks=landmarks.astype(np.float16), blendshapes=blend, matrix=matrix,
                                        pose=pose, box=boxes)
            done += len(chunk)
            bar.update(len(chunk))
    reader.close()
    return done


def _all_unfound(label_path: Path, crops: Path, chunk: range) -> bool:
    with np.load(label_path) as saved:
        found = saved["found"]
    return all((crops / f"{row_id(r)}.png").exists() for r, f in zip(chunk, found, strict=True) if f)


@dataclass
class CorpusTable:
    """Everything known of the labelled rows, row-aligned."""

    rows: np.ndarray
    seeds: np.ndarray
    w: np.ndarray
    coefficients: np.ndarray
    roll_edit: np.ndarray
    found: np.ndarray
    blendshapes: np.ndarray
    pose: np.ndarray
    direction_names: tuple[str, ...]


def load_table(out: Path) -> CorpusTable:
    """Join every chunk's latents and labels (chunks not yet labelled are left out)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("rows", "seeds", "w", "coefficients", "roll", "found",
                                                           "blendshapes", "pose")}
    names: tuple[str, ...] = ()
    for latent_path in sorted((out / "latents").glob("*.npz")):
        label_path = out / "labels" / latent_path.name
        if not label_path.exists():
            continue
        with np.load(latent_path) as latent, np.load(label_path) as label:
            for key in ("rows", "seeds", "w", "coefficients", "roll"):
                parts[key].append(latent[key])
            for key in ("found", "blendshapes", "pose"):
                parts[key].append(label[key])
            names = tuple(str(n) for n in latent["direction_names"]) or names
    if not parts["rows"]:
        raise CorpusError(f"{out}: no labelled chunks yet (run the render and label stages)")
    width = max(c.shape[1] for c in parts["coefficients"])
    parts["coefficients"] = [np.pad(c, ((0, 0), (0, width - c.shape[1]))) for c in parts["coefficients"]]
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return CorpusTable(cat["rows"], cat["seeds"], cat["w"], cat["coefficients"], cat["roll"], cat["found"],
                       cat["blendshapes"], cat["pose"], names)


def concat_tables(tables: list[CorpusTable]) -> CorpusTable:
    """Several corpora's tables as one (e.g. the natural and the edited part); rows keep their part's ids."""
    if len(tables) == 1:
        return tables[0]
    width = max(t.coefficients.shape[1] for t in tables)
    coefficients = np.concatenate([np.pad(t.coefficients, ((0, 0), (0, width - t.coefficients.shape[1])))
                                   for t in tables])
    names = max((t.direction_names for t in tables), key=len)

    def cat(key: str) -> np.ndarray:
        return np.concatenate([getattr(t, key) for t in tables])

    return CorpusTable(cat("rows"), cat("seeds"), cat("w"), coefficients, cat("roll_edit"), cat("found"),
                       cat("blendshapes"), cat("pose"), names)


def table_attributes(table: CorpusTable, schema, gender: np.ndarray | None) -> np.ndarray:
    """(N, A) natural-unit attributes: MediaPipe's pose and AUs, the gender model's probability (0.5 without)."""
    from surrogate.landmarks import aus_from_blendshapes

    aus = aus_from_blendshapes(table.blendshapes)
    values = np.zeros((len(table.rows), len(schema)), np.float32)
    for j, name in enumerate(schema.names):
        if name in ("yaw", "pitch", "roll"):
            values[:, j] = table.pose[:, ("yaw", "pitch", "roll").index(name)]
        elif name in aus:
            values[:, j] = aus[name]
        elif name == "gender":
            values[:, j] = 0.5 if gender is None else gender
        else:
            raise CorpusError(f"the corpus has no reading of attribute {name!r}")
    return values


def attributes_file(crops: str) -> str:
    """The attribute CSV of one crops folder: attributes.csv for the 64 px grey default, else named after it.

    One corpus may hold several crop sizes (all cut from the same frames and labels); each keeps its own CSV.
    """
    return "attributes.csv" if crops == images_dir(64, 1) else f"attributes_{crops}.csv"


def write_attributes(out: Path, table: CorpusTable, values: np.ndarray, schema, size: int, channels: int) -> Path:
    """The canonical attribute CSV of the found rows (ids = file stems of the crops)."""
    path = out / attributes_file(images_dir(size, channels))
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "file", *schema.names])
        for row, found, value in zip(table.rows, table.found, values, strict=True):
            if found:
                writer.writerow([row_id(int(row)), f"{images_dir(size, channels)}/{row_id(int(row))}.png",
                                 *(f"{v:.4f}" for v in schema.clip(value[None])[0])])
    return path


def _render_and_label_chunks(args: tuple) -> int:
    """One worker's share of both stages (module level, so a spawned process can import it)."""
    out, options, directions_path, size, channels, worker, workers, threads, batch = args
    directions = AttributeDirections.load(directions_path) if directions_path else None
    rendered = render_stage(out, options, directions, worker=worker, workers=workers, batch=batch,
                            threads=threads)
    return rendered + label_stage(out, options, size=size, channels=channels, worker=worker, workers=workers)


def render_and_label(out: Path, options: CorpusOptions, directions: Path | None, *, size: int, channels: int,
                     workers: int = 1, batch: int = 4) -> None:
    """Stages 1 and 2 over ``workers`` spawned processes (in this one for a single worker), each rendering
    and labelling its own chunks with an equal share of the CPU threads."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(out, options, str(directions) if directions else "", size, channels, i, workers, threads, batch)
            for i in range(workers)]
    if workers == 1:
        _render_and_label_chunks(jobs[0])
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_render_and_label_chunks, jobs)


def finish_corpus(out: Path, options: CorpusOptions, gender: GenderBoundary | None, size: int,
                  channels: int) -> dict:
    """Stage 3: write attributes.csv, latents.npz and corpus.json from every labelled chunk."""
    table = load_table(out)
    p_male = gender.probability(table.w) if gender is not None else None
    values = table_attributes(table, DEFAULT_SCHEMA, p_male)
    write_attributes(out, table, values, DEFAULT_SCHEMA, size, channels)
    with atomic_open(out / "latents.npz") as handle:
        np.savez(handle, rows=table.rows, seeds=table.seeds, w=table.w, coefficients=table.coefficients,
                 roll=table.roll_edit, found=table.found, blendshapes=table.blendshapes, pose=table.pose,
                 direction_names=np.array(table.direction_names, dtype=str))
    found = values[table.found]
    s = DEFAULT_SCHEMA
    summary = {
        "counts": {
            "rendered": int(len(table.rows)),
            "face_found": int(table.found.sum()),
            "found_rate": round(float(table.found.mean()), 4),
            "AU12>=2": round(float((found[:, s.index("AU12")] >= 2).mean()), 4),
            "AU04>=2": round(float((found[:, s.index("AU04")] >= 2).mean()), 4),
            "yaw<=-30": int((found[:, s.index("yaw")] <= -30).sum()),
            "yaw>=30": int((found[:, s.index("yaw")] >= 30).sum()),
            "yaw_range": [round(float(found[:, s.index("yaw")].min()), 1),
                          round(float(found[:, s.index("yaw")].max()), 1)],
        },
        "attributes": {name: {"mean": round(float(found[:, j].mean()), 3), "sd": round(float(found[:, j].std()), 3),
                              "histogram": np.histogram(found[:, j], bins=10,
                                                        range=(s.spec(name).low, s.spec(name).high))[0].tolist()}
                       for j, name in enumerate(s.names)},
        "options": options.__dict__,
        "gender": "boundary" if gender is not None else "none (0.5)",
        "crops": sorted(p.name for p in out.glob("images*") if p.is_dir()),
        "licence": PORTRAIT_GENERATOR.licence,
    }
    atomic_write_text(out / "corpus.json", json.dumps(summary, indent=2) + "\n")
    return summary


def merge_parts(parts: Sequence[Path], out: Path, crops: str, *, encode: str | None = None, quality: int = 85,
                limit: int | None = None) -> int:
    """Merge finished corpus ``parts`` into one training folder; returns the number of faces.

    OUT/<crops>/ holds every part's crops, named PART_ID.png (hard links where the file system allows,
    so a merge costs no disk; with ``encode`` "jpeg" or "webp" re-encoded at ``quality``, a folder sized for a
    64 MiB GPU carry), and OUT/attributes.csv the parts' rows with those names (at most ``limit``, parts in
    order).
    """
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    header: list[str] | None = None
    suffix = {None: ".png", "jpeg": ".jpg", "webp": ".webp"}[encode]
    for part in parts:
        source = part / attributes_file(crops)
        if not source.is_file():
            raise CorpusError(f"{part}: no {source.name} (run 'surrogate data portraits' on it with the size and "
                              f"channels of {crops})")
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            part_header = next(reader)
            if header is not None and part_header != header:
                raise CorpusError(f"{source}: columns {part_header} differ from {header}")
            header = part_header
            for record in reader:
                if limit is not None and len(rows) >= limit:
                    break
                image = part / record[1]
                if Path(record[1]).parent.name != crops or not image.is_file():
                    raise CorpusError(f"{source}: row {record[0]}: no crop {image} in {crops}/")
                name = f"{part.name}_{record[0]}"
                target = out / crops / f"{name}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    if encode is not None:
                        with Image.open(image) as crop, atomic_open(target) as handle:
                            crop.save(handle, format=encode.upper(), quality=quality)
                    else:
                        try:
                            os.link(image, target)
                        except OSError:
                            shutil.copyfile(image, target)
                rows.append([name, f"{crops}/{name}{suffix}", *record[2:]])
    with atomic_open(out / "attributes.csv", "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return len(rows)
