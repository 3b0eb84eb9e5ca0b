"""``surrogate data portraits | portrait-gender | portrait-directions``: the portrait corpus commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numpy as np

from surrogate.assets import PORTRAIT_GENERATOR, sha256
from surrogate.imageio import atomic_open, atomic_write_text
from surrogate.portrait_corpus import (
    CorpusError,
    CorpusOptions,
    attributes_file,
    check_options,
    concat_tables,
    label_stage,
    load_table,
    render_stage,
    table_attributes,
    write_attributes,
)
from surrogate.portrait_directions import (
    AttributeDirections,
    DirectionsError,
    GenderBoundary,
    cross_validated_gender,
    fit_directions,
    fit_logistic,
    held_out_r,
    read_gender_labels,
)
from surrogate.schema import DEFAULT_SCHEMA

# The corpus's edits, in read-out units per standard-normal draw (spread) plus a mean (shift). A step of 1
# moves MediaPipe's reading by only 0.3 (yaw) to 0.6 (AU12) of a unit (the gain, measured by
# benchmarks/portrait_directions.py), so the spreads are wide: about 12 degrees of real yaw, 1.4 AU of brow
# lowering (shifted up, since natural faces rarely frown) and 1.7 AU of smile per draw.
EDIT_SPREAD = {"yaw": 40.0, "pitch": 12.0, "AU04": 3.0, "AU05": 1.0, "AU07": 1.5, "AU12": 3.0, "AU23": 1.5,
               "gender": 0.0}
EDIT_SHIFT = {"AU04": 1.5}
# AU06 has no direction of its own: MediaPipe's AU06 is a function of AU07 and AU12 (surrogate.landmarks).
DIRECTION_NAMES = ("yaw", "pitch", "AU04", "AU05", "AU07", "AU12", "AU23", "gender")


def _worker(args: tuple) -> int:
    out, options, directions_path, size, channels, worker, workers, threads, batch = args
    directions = AttributeDirections.load(directions_path) if directions_path else None
    rendered = render_stage(out, options, directions, worker=worker, workers=workers, batch=batch,
                            threads=threads)
    return rendered + label_stage(out, options, size=size, channels=channels, worker=worker, workers=workers)


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
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(out, options, str(directions) if directions else "", size, int(channels), i, workers, threads, batch)
            for i in range(workers)]
    if workers == 1:
        _worker(jobs[0])
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_worker, jobs)
    summary = finish_corpus(out, options, gender, size, int(channels))
    click.echo(json.dumps(summary["counts"], indent=2))


def finish_corpus(out: Path, options: CorpusOptions, gender: GenderBoundary | None, size: int,
                  channels: int) -> dict:
    """Write the crops' attribute CSV, latents.npz and corpus.json from every labelled chunk."""

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
    import csv
    import shutil

    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    header: list[str] | None = None
    suffix = {None: ".png", "jpeg": ".jpg", "webp": ".webp"}[encode]
    for part in parts:
        source = part / attributes_file(crops)
        if not source.is_file():
            raise click.ClickException(f"{part}: no {source.name} (run 'surrogate data portraits' on it with the "
                                       f"size and channels of {crops})")
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            part_header = next(reader)
            if header is not None and part_header != header:
                raise click.ClickException(f"{source}: columns {part_header} differ from {header}")
            header = part_header
            for record in reader:
                if limit is not None and len(rows) >= limit:
                    break
                image = part / record[1]
                if Path(record[1]).parent.name != crops or not image.is_file():
                    raise click.ClickException(f"{source}: row {record[0]}: no crop {image} in {crops}/")
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
    click.echo(f"merged {len(rows)} faces from {len(parts)} parts into {out}")
