"""Synthetic labelled faces from the 3-D face model: the training data of the GAN and the recon net.

No face dataset of useful size is reachable offline, so the project renders its own. Layout::

    DIR/schema.json        AttributeSchema.to_json()
    DIR/attributes.csv     id,file,identity,<schema names in order>   (file relative to DIR)
    DIR/params.npz         every render parameter per row (identity coefficients, lighting, ...)
    DIR/synth.json         how the set was made (seed, size, colour, distribution): checked on resume
    DIR/images/<id>.png    uint8 grey (or RGB) size x size

Determinism: row i's parameters depend only on (seed, i) (its identity's on (seed, identity id)), so
``--n 100`` and ``--n 200`` with one seed share their first 100 rows, and a killed run resumes by
skipping the images that exist (every file is written atomically, so none is ever partial; the CSV
and params.npz are rewritten whole at the end of each run, and a rerun rebuilds them).

The default attribute distribution resembles real data (see ``SynthDistribution``): mostly
near-frontal poses, sparse action units, AU6 + AU12 together as smiles, AU4/5/7/23 as anger-like faces,
small independent AU noise, both genders with a confident P(male) for most faces, several images per
identity (useful for identity-leakage audits), and domain variation (lighting, textured backgrounds,
small translation / scale jitter).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.configfile import build_dataclass, load_settings
from surrogate.face_model import N_IDENTITY, SUPPORTED_AUS, FaceParams, params_from_attributes
from surrogate.imageio import atomic_write_bytes, atomic_write_text, save_png
from surrogate.noise import STREAM_SYNTH_IDENTITY, STREAM_SYNTH_ROW, indexed_rng
from surrogate.render import RENDERER_VERSION
from surrogate.schema import DEFAULT_SCHEMA, POSE_NAMES, AttributeSchema

FORMAT_VERSION = 1
ID_WIDTH = 7  # ids are zero-padded row numbers, stable whatever --n is
_STREAM_ROW = STREAM_SYNTH_ROW
_STREAM_IDENTITY = STREAM_SYNTH_IDENTITY


class DatasetError(ValueError):
    """A synthetic dataset folder that cannot be read: names the file, column or image at fault."""


# ---------------------------------------------------------------------------------------------
# The attribute distribution
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoseDistribution:
    yaw_std: float = 12.0  # degrees, near-frontal faces
    pitch_std: float = 7.0
    roll_std: float = 4.0
    wide_fraction: float = 0.15  # share of faces drawn from the wide range below instead
    wide_yaw: float = 55.0  # uniform in +-wide_yaw
    wide_pitch: float = 30.0
    wide_roll: float = 20.0


@dataclass(frozen=True)
class ExpressionDistribution:
    smile: float = 0.30  # AU12 with AU6 (Duchenne smile), sometimes lips apart
    anger: float = 0.15  # AU4 with AU7, AU5, AU23 in varying combinations
    surprise: float = 0.05  # AU1 + AU2 + AU5 + AU26 / AU25 (only what the schema has is rendered)
    other: float = 0.15  # one to three random AUs
    # the rest is neutral
    noise_probability: float = 0.2  # chance that each AU also gets small independent intensity
    noise_max: float = 1.0


@dataclass(frozen=True)
class GenderDistribution:
    male_fraction: float = 0.5
    uncertain_fraction: float = 0.15  # P(male) uniform in 0.2..0.8 (androgynous faces)
    confident_low: float = 0.85  # confident faces: P(male) in confident_low..1 (or 0..1-confident_low)


@dataclass(frozen=True)
class SceneDistribution:
    light_azimuth_std: float = 25.0
    light_elevation_low: float = 0.0
    light_elevation_high: float = 45.0
    light_strength_low: float = 0.5
    light_strength_high: float = 0.85
    ambient_low: float = 0.25
    ambient_high: float = 0.45
    scale_std: float = 0.04
    shift_std: float = 0.02  # fraction of the image
    textured_background: float = 0.7  # share of smooth random textures (the rest: plain grey levels)


@dataclass(frozen=True)
class SynthDistribution:
    """All knobs of the synthetic data; load overrides from TOML/JSON with ``from_file``."""

    images_per_identity: int = 4
    pose: PoseDistribution = field(default_factory=PoseDistribution)
    expression: ExpressionDistribution = field(default_factory=ExpressionDistribution)
    gender: GenderDistribution = field(default_factory=GenderDistribution)
    scene: SceneDistribution = field(default_factory=SceneDistribution)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "distribution") -> SynthDistribution:
        """Defaults overridden by ``data``; unknown keys and bad values raise ValueError naming them."""
        obj = build_dataclass(cls, data, source, ValueError)
        _check_distribution(obj, source)
        return obj

    @classmethod
    def from_file(cls, path: str | Path) -> SynthDistribution:
        """Overrides from a ``.toml`` file or a JSON object (any other suffix)."""
        return cls.from_dict(load_settings(path, ValueError), source=str(path))


def _check_distribution(dist: SynthDistribution, where: str) -> None:
    problems = []
    if dist.images_per_identity < 1:
        problems.append("images_per_identity must be >= 1")
    e = dist.expression
    if min(e.smile, e.anger, e.surprise, e.other) < 0 or e.smile + e.anger + e.surprise + e.other > 1:
        problems.append("expression.smile/anger/surprise/other must be >= 0 and sum to at most 1")
    for section in (dist.pose, dist.expression, dist.gender, dist.scene):
        for f in fields(section):
            value = getattr(section, f.name)
            if not math.isfinite(value) or value < 0:
                problems.append(f"{f.name} must be a finite number >= 0, got {value}")
    for name in ("wide_fraction",):
        if getattr(dist.pose, name) > 1:
            problems.append(f"pose.{name} must be <= 1")
    for name in ("male_fraction", "uncertain_fraction", "confident_low"):
        if getattr(dist.gender, name) > 1:
            problems.append(f"gender.{name} must be <= 1")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Sampling (row i depends only on (seed, i))
# ---------------------------------------------------------------------------------------------

def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return indexed_rng(seed, stream, index)


@dataclass(frozen=True)
class IdentitySample:
    coefficients: np.ndarray
    gender: float
    skin: float
    hair: float


def sample_identity(seed: int, identity: int, dist: SynthDistribution) -> IdentitySample:
    rng = _rng(seed, _STREAM_IDENTITY, identity)
    coefficients = rng.standard_normal(N_IDENTITY).astype(np.float32)
    g = dist.gender
    male = rng.uniform() < g.male_fraction
    if rng.uniform() < g.uncertain_fraction:
        gender = rng.uniform(0.2, 0.8)
    else:
        confident = rng.uniform(g.confident_low, 1.0)
        gender = confident if male else 1.0 - confident
    return IdentitySample(coefficients, float(gender), float(rng.uniform(0.0, 1.0)), float(rng.beta(1.2, 2.5)))


def sample_expression(rng: np.random.Generator, dist: ExpressionDistribution) -> dict[str, float]:
    """AU intensities 0..5 for one face (every supported AU; the schema picks which are used)."""
    aus = dict.fromkeys(SUPPORTED_AUS, 0.0)
    kind = rng.uniform()
    if kind < dist.smile:
        aus["AU12"] = rng.uniform(1.0, 5.0)
        aus["AU06"] = float(np.clip(aus["AU12"] * rng.uniform(0.4, 1.0) + rng.normal(0, 0.3), 0, 5))
        if rng.uniform() < 0.4:
            aus["AU25"] = rng.uniform(0.5, 4.0)
    elif kind < dist.smile + dist.anger:
        aus["AU04"] = rng.uniform(1.5, 5.0)
        aus["AU07"] = rng.uniform(0.5, 4.5) if rng.uniform() < 0.8 else 0.0
        aus["AU05"] = rng.uniform(0.5, 3.5) if rng.uniform() < 0.4 else 0.0
        aus["AU23"] = rng.uniform(0.5, 4.5) if rng.uniform() < 0.6 else 0.0
    elif kind < dist.smile + dist.anger + dist.surprise:
        for au in ("AU01", "AU02", "AU05"):
            aus[au] = rng.uniform(1.5, 5.0)
        aus["AU26"] = rng.uniform(0.5, 4.0)
        aus["AU25"] = rng.uniform(1.0, 4.0)
    elif kind < dist.smile + dist.anger + dist.surprise + dist.other:
        for au in rng.choice(SUPPORTED_AUS, size=int(rng.integers(1, 4)), replace=False):
            aus[str(au)] = rng.uniform(1.0, 5.0)
    noisy = rng.uniform(size=len(SUPPORTED_AUS)) < dist.noise_probability
    extra = rng.uniform(0.0, dist.noise_max, size=len(SUPPORTED_AUS))
    for au, is_noisy, value in zip(SUPPORTED_AUS, noisy, extra, strict=True):
        if is_noisy:
            aus[au] = min(5.0, aus[au] + float(value))
    return {k: float(v) for k, v in aus.items()}


def background_texture(rng: np.random.Generator, size: int, rgb: bool, textured: float) -> np.ndarray | float:
    """A plain grey level or a smooth random texture (float 0..1) for domain variation."""
    if rng.uniform() >= textured:
        return float(rng.uniform(0.15, 0.95))
    from PIL import Image

    channels = 3 if rgb else 1
    cells = int(rng.integers(2, 7))
    base = rng.uniform(0.15, 0.95)
    coarse = np.clip(base + rng.normal(0, 0.18, size=(cells, cells, channels)), 0, 1)
    layers = [np.asarray(Image.fromarray((coarse[..., c] * 255).astype(np.uint8)).resize(
        (size, size), Image.BICUBIC), dtype=np.float32) / 255.0 for c in range(channels)]
    image = np.stack(layers, axis=-1)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    image += (rng.uniform(-0.25, 0.25) * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None]
    image += rng.normal(0, rng.uniform(0.0, 0.03), size=image.shape)  # sensor-like grain
    image = np.clip(image, 0, 1).astype(np.float32)
    return image if rgb else image[..., 0]


@dataclass(frozen=True)
class RowSample:
    """Everything about row i: its attributes (natural units, schema order) and render parameters."""

    values: np.ndarray
    identity: int
    params: FaceParams
    background: np.ndarray | float


def sample_row(
    seed: int, index: int, schema: AttributeSchema, dist: SynthDistribution, size: int, rgb: bool
) -> RowSample:
    identity = index // dist.images_per_identity
    person = sample_identity(seed, identity, dist)
    rng = _rng(seed, _STREAM_ROW, index)
    p = dist.pose
    if rng.uniform() < p.wide_fraction:
        pose = {"yaw": rng.uniform(-p.wide_yaw, p.wide_yaw), "pitch": rng.uniform(-p.wide_pitch, p.wide_pitch),
                "roll": rng.uniform(-p.wide_roll, p.wide_roll)}
    else:
        pose = {"yaw": rng.normal(0, p.yaw_std), "pitch": rng.normal(0, p.pitch_std), "roll": rng.normal(0, p.roll_std)}
    aus = sample_expression(rng, dist.expression)
    natural = {**pose, **aus, "gender": person.gender}
    values = np.array([natural[name] for name in schema.names], dtype=np.float64)
    lows = np.array([a.low for a in schema.attributes])
    highs = np.array([a.high for a in schema.attributes])
    # Rounded so the CSV holds exactly the values the image was rendered with.
    values = np.round(np.clip(values, lows, highs), 3).astype(np.float32)
    s = dist.scene
    scene = {
        "light_azimuth": float(rng.normal(0, s.light_azimuth_std)),
        "light_elevation": float(rng.uniform(s.light_elevation_low, s.light_elevation_high)),
        "light_strength": float(rng.uniform(s.light_strength_low, s.light_strength_high)),
        "ambient": float(rng.uniform(s.ambient_low, s.ambient_high)),
        "scale": float(np.exp(rng.normal(0, s.scale_std))),
        "shift_x": float(rng.normal(0, s.shift_std)),
        "shift_y": float(rng.normal(0, s.shift_std)),
    }
    background = background_texture(rng, size, rgb, s.textured_background)
    params = params_from_attributes(schema, values.astype(np.float64), identity=person.coefficients,
                                    skin=person.skin, hair=person.hair, **scene)
    if "gender" not in schema:  # the face still needs a gender; use the identity's
        params = replace(params, gender=person.gender)
    return RowSample(values, identity, params, background)


def check_schema_renderable(schema: AttributeSchema) -> None:
    unknown = [n for n in schema.names if n not in (*POSE_NAMES, "gender", *SUPPORTED_AUS)]
    if unknown:
        raise ValueError(f"the 3-D face model cannot render attribute(s) {unknown}")


# ---------------------------------------------------------------------------------------------
# Writing and reading the dataset
# ---------------------------------------------------------------------------------------------

def row_id(index: int) -> str:
    return f"{index:0{ID_WIDTH}d}"


def synthesize_dataset(
    out: str | Path,
    n: int,
    *,
    seed: int = 0,
    size: int = 64,
    rgb: bool = False,
    schema: AttributeSchema = DEFAULT_SCHEMA,
    distribution: SynthDistribution | None = None,
    batch_size: int = 64,
    progress: bool = True,
    workers: int = 1,
    face_model: str = "parametric",
) -> tuple[int, int]:
    """Write (or complete) a dataset of ``n`` rows in ``out``; returns (rendered, skipped) counts.

    ``face_model``: ``"parametric"`` (``surrogate.face_model``) or ``"ict"`` (``surrogate.ict_model``);
    the same rows (attributes, identity, tones, lighting, backdrop) either way.

    ``workers`` > 1 renders batches in that many processes; every row still depends only on
    (seed, index), so the images are identical to a single-process run.
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    check_schema_renderable(schema)
    dist = distribution or SynthDistribution()
    out = Path(out)
    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "size": int(size),
        "rgb": bool(rgb),
        "schema": schema.to_dict(),
        "distribution": dist.to_dict(),
        "renderer": RENDERER_VERSION,  # completing a folder drawn by another renderer would mix two looks
    }
    if face_model == "ict":  # parametric folders keep their manifest as it was, so they still resume
        from surrogate.ict_model import ICT_MODEL_VERSION

        manifest["face_model"] = face_model
        manifest["renderer"] = f"ict-{ICT_MODEL_VERSION}"
    elif face_model != "parametric":
        raise ValueError(f"face_model must be 'parametric' or 'ict', got {face_model!r}")
    manifest_path = out / "synth.json"
    if manifest_path.exists():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{manifest_path}: unreadable ({exc}); remove the folder or pick another --out") from exc
        differing = [k for k in manifest if previous.get(k) != manifest[k]]
        if differing:
            detail = ""
            if "renderer" in differing:
                detail = (f" (renderer version {previous.get('renderer') or 'unrecorded'} drew it, this one is "
                          f"{manifest['renderer']})")
            raise ValueError(f"{out} holds a dataset made with different {', '.join(differing)}{detail}; "
                             "resume with the same settings or pick another --out")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists, is not empty and is not a synthetic dataset; pick another --out")
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    atomic_write_text(out / "schema.json", schema.to_json())
    (out / "images").mkdir(parents=True, exist_ok=True)

    rows: list[RowSample] = []
    rendered = skipped = 0
    bar = tqdm(total=n, desc="rendering faces", unit="face", disable=not progress)
    pending: list[int] = []

    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    futures = []

    def flush() -> None:
        nonlocal rendered
        if not pending:
            return
        batch = [(out / "images" / f"{row_id(i)}.png", rows[i].params, rows[i].background) for i in pending]
        if pool is None:
            _render_and_save(batch, size, rgb, face_model)
        else:
            futures.append(pool.submit(_render_and_save, batch, size, rgb, face_model))
            while len(futures) > 2 * workers:
                futures.pop(0).result()
        rendered += len(pending)
        bar.update(len(pending))
        pending.clear()

    for i in range(n):
        rows.append(sample_row(seed, i, schema, dist, size, rgb))
        image_path = out / "images" / f"{row_id(i)}.png"
        if image_path.exists() and image_path.stat().st_size > 0:
            skipped += 1
            bar.update(1)
            continue
        pending.append(i)
        if len(pending) >= batch_size:
            flush()
    flush()
    if pool is not None:
        for future in futures:
            future.result()
        pool.shutdown()
    bar.close()
    _write_tables(out, schema, rows)
    return rendered, skipped


def _render_and_save(batch: Sequence[tuple[Path, FaceParams, Any]], size: int, rgb: bool,
                     face_model: str = "parametric") -> None:
    """Render one batch and write its PNGs (atomically); runs in a worker process when --workers > 1."""
    from surrogate.synthesis_3d import render_params

    images = render_params([b[1] for b in batch], size, face_model, rgb=rgb, backgrounds=[b[2] for b in batch])
    for (path, _, _), image in zip(batch, images, strict=True):
        save_png(path, image)


def _write_tables(out: Path, schema: AttributeSchema, rows: Sequence[RowSample]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "file", "identity", *schema.names])
    for i, row in enumerate(rows):
        writer.writerow([row_id(i), f"images/{row_id(i)}.png", row.identity, *(f"{v:.3f}" for v in row.values)])
    atomic_write_text(out / "attributes.csv", buffer.getvalue())
    ps = [r.params for r in rows]
    arrays = {
        "ids": np.array([row_id(i) for i in range(len(rows))]),
        "identity": np.array([r.identity for r in rows], np.int64),
        "identity_coefficients": np.stack([p.identity for p in ps]).astype(np.float32),
        "gender": np.array([p.gender for p in ps], np.float32),
        "skin": np.array([p.skin for p in ps], np.float32),
        "hair": np.array([p.hair for p in ps], np.float32),
        "lighting": np.array([[p.light_azimuth, p.light_elevation, p.light_strength, p.ambient] for p in ps],
                             np.float32),
        "lighting_names": np.array(["light_azimuth", "light_elevation", "light_strength", "ambient"]),
        "scale": np.array([p.scale for p in ps], np.float32),
        "shift": np.array([[p.shift_x, p.shift_y] for p in ps], np.float32),
    }
    data = io.BytesIO()
    np.savez_compressed(data, **arrays)
    atomic_write_bytes(out / "params.npz", data.getvalue())


@dataclass(frozen=True)
class SyntheticDataset:
    """A dataset folder as read by ``load_dataset``."""

    root: Path
    schema: AttributeSchema
    ids: list[str]
    files: list[Path]  # absolute
    identities: np.ndarray  # (N,) int64
    values: np.ndarray  # (N, A) float32, natural units, schema order

    def __len__(self) -> int:
        return len(self.ids)

    def params(self) -> dict[str, np.ndarray] | None:
        """The optional params.npz (identity coefficients, lighting, ...) or None if absent."""
        path = self.root / "params.npz"
        if not path.exists():
            return None
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    def load_images(self, indices: Sequence[int] | None = None, *, grayscale: bool | None = None) -> np.ndarray:
        """uint8 (N, H, W) or (N, H, W, 3); ``grayscale`` None keeps what the first file holds."""
        from surrogate.imageio import load_image

        indices = range(len(self)) if indices is None else indices
        images = []
        for i in indices:
            if grayscale is None:
                from PIL import Image

                with Image.open(self.files[i]) as im:
                    grayscale = im.mode in ("L", "LA", "I", "I;16")
            images.append(load_image(self.files[i], grayscale=grayscale))
        if not images:
            return np.zeros((0, 0, 0), np.uint8)
        return np.stack(images)


def load_dataset(root: str | Path, *, check_images: bool = True) -> SyntheticDataset:
    """Read a dataset folder (contract 2); clear ``DatasetError`` for missing files/columns/images."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    schema_path, csv_path = root / "schema.json", root / "attributes.csv"
    if not schema_path.exists():
        raise DatasetError(f"{schema_path}: missing (not a dataset folder, or its synthesis never finished)")
    try:
        schema = AttributeSchema.from_json(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{schema_path}: not a valid attribute schema ({exc})") from exc
    if not csv_path.exists():
        raise DatasetError(f"{csv_path}: missing; rerun `surrogate data synth` with the same settings to rebuild it")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        expected = ["id", "file", "identity", *schema.names]
        if header is None:
            raise DatasetError(f"{csv_path}: empty file")
        missing = [c for c in expected if c not in header]
        if missing:
            raise DatasetError(f"{csv_path}: missing column(s) {missing}; expected {expected}")
        col = {name: header.index(name) for name in expected}
        ids, files, identities, values = [], [], [], []
        for line_no, record in enumerate(reader, start=2):
            if not record:
                continue
            try:
                ids.append(record[col["id"]])
                files.append(root / record[col["file"]])
                identities.append(int(record[col["identity"]]))
                values.append([float(record[col[name]]) for name in schema.names])
            except (IndexError, ValueError) as exc:
                raise DatasetError(f"{csv_path}: line {line_no}: {exc}") from exc
    array = np.asarray(values, dtype=np.float32).reshape(-1, len(schema))
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise DatasetError(f"{csv_path}: line {bad[0] + 2}, column {schema.names[bad[1]]}: not a finite number")
    if check_images:
        absent = [str(f.relative_to(root)) for f in files if not f.is_file()]
        if absent:
            shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            raise DatasetError(f"{root}: {len(absent)} image(s) listed in attributes.csv are missing: {shown}")
    return SyntheticDataset(root, schema, ids, files, np.asarray(identities, dtype=np.int64), array)
