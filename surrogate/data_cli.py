"""``surrogate data``: the commands that make and inspect training data, in one place.

``synth`` renders the synthetic labelled set (``surrogate.training_data``), ``sheet`` draws a captioned
contact sheet of any such set (``surrogate.sheet``), and ``portraits`` / ``portraits-merge`` /
``portrait-gender`` / ``portrait-directions`` build the photoreal portrait corpus
(``surrogate.portrait_corpus``, ``surrogate.portrait_directions``). The library modules hold the work;
this module only parses options and turns their errors into messages.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from surrogate.assets import sha256
from surrogate.imageio import ImageDecodeError, save_png
from surrogate.portrait_corpus import (
    CorpusError,
    CorpusOptions,
    check_options,
    concat_tables,
    finish_corpus,
    load_table,
    merge_parts,
    render_and_label,
    table_attributes,
)
from surrogate.portrait_directions import (
    DIRECTION_NAMES,
    EDIT_SHIFT,
    EDIT_SPREAD,
    AttributeDirections,
    DirectionsError,
    GenderBoundary,
    cross_validated_gender,
    fit_directions,
    fit_logistic,
    held_out_r,
    read_gender_labels,
)
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema
from surrogate.sheet import caption, contact_sheet
from surrogate.training_data import DatasetError, SynthDistribution, load_dataset, synthesize_dataset


@click.command(name="synth")
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of faces.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Dataset folder.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Row i depends only on (seed, i): a larger --n extends the same dataset.")
@click.option("--size", type=click.IntRange(8, 1024), default=64, show_default=True, help="Image size in pixels.")
@click.option("--rgb", is_flag=True, help="Write RGB images instead of greyscale.")
@click.option("--distribution", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML or JSON file overriding the attribute distribution (see docs/face_model.md).")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Attribute schema JSON (default: the paper's ten attributes).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Faces rendered per batch.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Rendering processes (images are identical for any number).")
@click.option("--face-model", type=click.Choice(["parametric", "ict"]), default="parametric", show_default=True,
              help="3-D face model: the project's parametric mesh or the scanned ICT-FaceKit head.")
def synth_command(n: int, out: Path, seed: int, size: int, rgb: bool, distribution: Path | None,
                  schema_file: Path | None, batch_size: int, workers: int, face_model: str) -> None:
    """Render a synthetic labelled face dataset: images, attributes.csv, identities, params.npz.

    Deterministic for a seed and resumable: rerunning skips the images that already exist.
    """
    try:
        dist = SynthDistribution.from_file(distribution) if distribution else SynthDistribution()
        schema = DEFAULT_SCHEMA
        if schema_file:
            schema = AttributeSchema.from_json(schema_file.read_text(encoding="utf-8"))
        rendered, skipped = synthesize_dataset(out, n, seed=seed, size=size, rgb=rgb, schema=schema,
                                               distribution=dist, batch_size=batch_size, workers=workers,
                                               face_model=face_model)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{out}: {n} faces ({rendered} rendered, {skipped} already there); "
               f"attributes in {out / 'attributes.csv'}")


@click.command(name="sheet")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@click.option("--n", "n", type=click.IntRange(min=1), default=32, show_default=True, help="Faces on the sheet.")
@click.option("--columns", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--cell", type=click.IntRange(16, 512), default=None,
              help="Tile size in pixels (default max(size, 128)).")
def sheet_command(dataset: Path, out: Path, n: int, columns: int, cell: int | None) -> None:
    """Draw a contact sheet of DATASET's first N faces with pose / AU / gender captions."""
    try:
        data = load_dataset(dataset)
        count = min(n, len(data))
        if count == 0:
            raise click.ClickException(f"{dataset}: the dataset has no rows")
        images = data.load_images(range(count))
    except (DatasetError, ImageDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    captions = [caption(data.schema, data.values[i]) for i in range(count)]
    save_png(out, contact_sheet(list(images), captions, columns=columns, cell=cell))
    click.echo(f"{out}: {count} faces from {dataset}")


@click.command("portraits")
@click.option("--n", type=click.IntRange(1), required=True, help="Number of faces.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Corpus folder.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="The corpus's seed.")
@click.option("--size", type=click.IntRange(16, 512), default=64, show_default=True, help="Crop side (pixels).")
@click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="1: grey (the paper's GENKI-like crops), 3: colour.")
@click.option("--psi", type=click.FloatRange(0.0, 1.5), default=0.7, show_default=True, help="Truncation.")
@click.option("--roll-sd", type=click.FloatRange(0.0, 30.0), default=10.0, show_default=True,
              help="Standard deviation (degrees) of the in-plane rotation that gives the corpus its roll.")
@click.option("--directions", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Attribute directions ('surrogate data portrait-directions') to widen the attribute spread.")
@click.option("--edit-scale", type=click.FloatRange(0.0, 3.0), default=1.0, show_default=True,
              help="Multiplies every edit (with --directions).")
@click.option("--gender", "gender_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Gender boundary ('surrogate data portrait-gender'); without it the gender column is 0.5.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes; each renders and labels its own chunks.")
@click.option("--batch", type=click.IntRange(1, 64), default=4, show_default=True, help="Generator batch.")
def portraits_command(n: int, out: Path, seed: int, size: int, channels: str, psi: float, roll_sd: float,
                      directions: Path | None, edit_scale: float, gender_path: Path | None, workers: int,
                      batch: int) -> None:
    """Render, label (MediaPipe) and crop N portraits of nobody into OUT; resumable and deterministic.

    Writes OUT/attributes.csv (canonical; 'surrogate train gan --data OUT --attributes OUT/attributes.csv'),
    OUT/images<size><g|c>/ (aligned crops; a size other than 64 grey gets its own OUT/attributes_images<size><g|c>.csv
    and reuses the frames and labels: adding a size to a finished corpus only cuts crops), OUT/latents.npz
    (every face's seed, w, edits, roll) and OUT/corpus.json (counts, coverage).
    The weights are research / non-commercial only.
    """
    options = CorpusOptions(seed=seed, n=n, psi=psi, roll_sd=roll_sd, edit_scale=edit_scale,
                            directions_sha256=sha256(directions) if directions else "")
    out.mkdir(parents=True, exist_ok=True)
    try:
        check_options(out, options)
        if directions:
            AttributeDirections.load(directions)
        gender = GenderBoundary.load(gender_path) if gender_path else None
    except (CorpusError, DirectionsError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"out": str(out), "size": size, "channels": int(channels), "workers": workers,
                           "directions": str(directions or ""), **options.__dict__}, indent=2))
    render_and_label(out, options, directions, size=size, channels=int(channels), workers=workers, batch=batch)
    summary = finish_corpus(out, options, gender, size, int(channels))
    click.echo(json.dumps(summary["counts"], indent=2))


@click.command("portrait-gender")
@click.argument("corpus", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--labels", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="row,label CSV of hand labels (m, f, or u for cannot tell).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Boundary file (.npz).")
@click.option("--l2", type=click.FloatRange(0.0, min_open=True), default=30.0, show_default=True)
def portrait_gender_command(corpus: Path, labels: Path, out: Path, l2: float) -> None:
    """Fit the gender boundary in w to hand labels of CORPUS's portraits; prints 5-fold held-out accuracy/AUC."""
    try:
        table = load_table(corpus)
        wanted = read_gender_labels(labels)
    except (CorpusError, DirectionsError) as exc:
        raise click.ClickException(str(exc)) from exc
    index = {int(r): i for i, r in enumerate(table.rows)}
    missing = sorted(r for r in wanted if r not in index)
    if missing:
        raise click.ClickException(f"{labels}: rows {missing[:10]} are not labelled rows of {corpus}")
    rows = sorted(wanted)
    w = table.w[[index[r] for r in rows]]
    y = np.array([wanted[r] for r in rows])
    accuracy, area = cross_validated_gender(w, y, l2)
    weights, bias = fit_logistic(w, y, l2)
    GenderBoundary(weights, bias).save(out, labels=len(y), male=int(y.sum()), cv_accuracy=accuracy, cv_auc=area,
                                       l2=l2)
    click.echo(f"{len(y)} labels ({int(y.sum())} male): 5-fold held-out accuracy {accuracy:.3f}, AUC {area:.3f}; "
               f"wrote {out}")


@click.command("portrait-directions")
@click.argument("corpora", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--gender", "gender_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              required=True, help="Gender boundary ('surrogate data portrait-gender').")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Directions (.npz).")
@click.option("--l2", type=click.FloatRange(0.0, min_open=True), default=10.0, show_default=True)
def portrait_directions_command(corpora: tuple[Path, ...], gender_path: Path, out: Path, l2: float) -> None:
    """Fit the read-out of the attributes from w over CORPORA and the conditioned directions; prints held-out r.

    Pass the natural and the edited part together: the edits widen the spread the read-out is fitted on.
    """
    try:
        table = concat_tables([load_table(corpus) for corpus in corpora])
        gender = GenderBoundary.load(gender_path)
    except (CorpusError, DirectionsError) as exc:
        raise click.ClickException(str(exc)) from exc
    values = table_attributes(table, DEFAULT_SCHEMA, gender.probability(table.w))
    keep = table.found
    columns = [DEFAULT_SCHEMA.index(n) for n in DIRECTION_NAMES]
    w, y = table.w[keep], values[keep][:, columns]
    r = held_out_r(w, y, l2)
    directions = fit_directions(w, y, DIRECTION_NAMES, np.array([EDIT_SPREAD[n] for n in DIRECTION_NAMES]),
                                np.array([EDIT_SHIFT.get(n, 0.0) for n in DIRECTION_NAMES]), l2)
    directions.save(out, rows=int(keep.sum()), held_out_r=r, l2=l2)
    click.echo(f"fitted on {int(keep.sum())} portraits; held-out r of the linear read-out from w:")
    for name, value in zip(DIRECTION_NAMES, r, strict=True):
        click.echo(f"  {name:>6}: {value:.3f}")
    click.echo(f"wrote {out}")


@click.command("portraits-merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Merged folder.")
@click.option("--crops", default="images64g", show_default=True, help="Crops folder of each part to merge.")
@click.option("--encode", type=click.Choice(["jpeg", "webp"]), default=None,
              help="Re-encode the crops (lossy) instead of linking the PNGs: a corpus sized for a 64 MiB GPU carry "
                   "(128 px colour at quality 85: about 4.6 KB a face as JPEG, 3.3 KB as WebP).")
@click.option("--quality", type=click.IntRange(50, 100), default=85, show_default=True, help="With --encode.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many faces, parts in order.")
def portraits_merge_command(parts: tuple[Path, ...], out: Path, crops: str, encode: str | None, quality: int,
                            limit: int | None) -> None:
    """Merge corpus PARTS (e.g. the natural and the edited part) into one training folder.

    OUT/<crops>/ holds every part's crops, named PART_ID.png (hard links where the file system allows;
    PART_ID.jpg or .webp with --encode), and OUT/attributes.csv the parts' rows with those names; the parts stay
    as they are.
    """
    try:
        rows = merge_parts(parts, out, crops, encode=encode, quality=quality, limit=limit)
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"merged {rows} faces from {len(parts)} parts into {out}")
