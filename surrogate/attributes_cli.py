"""``surrogate attributes``: convert, extract and describe attribute files, in one place.

``convert`` reads other tools' output (``surrogate.adapters``), ``extract`` estimates attributes from
face images (``surrogate.extract``), ``schema`` prints an attribute schema.

Conversion is the privacy boundary's first step: researchers turn their tool's per-face output into
the canonical CSV that synthesis reads, and get an audit trail (``OUT.rejected.csv``) of every row
that was left out and why, so no failed detection silently becomes a neutral surrogate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from surrogate.adapters import (
    AU_SCALES,
    DEFAULT_CLIP_TOLERANCE,
    DEFAULT_FILL,
    DEFAULT_MIN_CONFIDENCE,
    FORMATS,
    AttributeFileError,
    AttributeTable,
    parse_fill,
    read_attributes,
    write_canonical_csv,
    write_rejected_csv,
)
from surrogate.extract import (
    EXTRACTORS,
    collect_images,
    extract_attributes,
    load_any_estimator,
    rows_to_csv,
)
from surrogate.imageio import atomic_write_text
from surrogate.schema import DEFAULT_SCHEMA, OPENFACE_AU_NAMES, POSE_NAMES, AttributeSchema

_AU_RE = re.compile(r"^(?:au)?\s*0*(\d{1,2})(?:_r)?$", re.IGNORECASE)
MAX_LISTED = 20


def parse_aus(text: str) -> list[str]:
    """'AU4, au12,6' -> ['AU04', 'AU12', 'AU06'] (any OpenFace AU, in the order given)."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _AU_RE.match(part)
        name = f"AU{int(match.group(1)):02d}" if match else part
        if name not in OPENFACE_AU_NAMES:
            raise click.BadParameter(f"unknown action unit {part!r}; known: {', '.join(OPENFACE_AU_NAMES)}",
                                     param_hint="--aus")
        if name in names:
            raise click.BadParameter(f"{name} is listed twice", param_hint="--aus")
        names.append(name)
    if not names:
        raise click.BadParameter("give at least one action unit, e.g. AU06,AU12", param_hint="--aus")
    return names


def build_schema(aus: str | None, schema_file: Path | None, *, gender: bool = True) -> AttributeSchema:
    """The schema a command works in: a schema file, or pose + the given AUs (+ gender), or the default."""
    if aus and schema_file:
        raise click.UsageError("give either --aus or --schema, not both")
    if schema_file is not None:
        try:
            data = json.loads(schema_file.read_text(encoding="utf-8-sig"))
            if isinstance(data, dict) and "attributes" not in data and isinstance(data.get("schema"), dict):
                data = data["schema"]  # a model card / dataset file that embeds its schema
            return AttributeSchema.from_dict(data)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"{schema_file}: not an attribute schema ({exc})",
                                     param_hint="--schema") from exc
    if aus:
        return AttributeSchema.from_names([*POSE_NAMES, *parse_aus(aus), *(["gender"] if gender else [])])
    if not gender:
        return AttributeSchema.from_names([n for n in DEFAULT_SCHEMA.names if n != "gender"])
    return DEFAULT_SCHEMA


def rejected_path_for(out: Path) -> Path:
    """out.csv -> out.rejected.csv (next to the canonical CSV, so they travel together)."""
    return out.with_name(f"{out.stem if out.suffix else out.name}.rejected.csv")


def summary_lines(table: AttributeTable) -> list[str]:
    lines = [
        f"format: {table.source_format}",
        f"rows read: {table.rows_read}   accepted: {len(table)}   rejected: {len(table.rejected)}",
    ]
    for kind, count in table.rejected_by_kind().items():
        lines.append(f"  rejected, {kind}: {count}")
    lines += [f"note: {n}" for n in table.notes]
    for adj in table.adjustments[:MAX_LISTED]:
        lines.append(f"clipped row {adj.row} ({adj.id}): {adj.note}")
    if len(table.adjustments) > MAX_LISTED:
        lines.append(f"clipped: ... and {len(table.adjustments) - MAX_LISTED} more value(s)")
    return lines


@click.command("convert")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Canonical CSV to write (id,file,<schema names>); OUT.rejected.csv is written beside it.")
@click.option("--format", "format_", type=click.Choice(["auto", *FORMATS]), default="auto", show_default=True,
              help="Source format; 'auto' reads the header and says what it chose.")
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=DEFAULT_MIN_CONFIDENCE,
              show_default=True, help="Reject rows whose detection confidence (OpenFace confidence, py-feat "
              "FaceScore) is lower.")
@click.option("--aus", default=None, help="Action units of the schema, e.g. AU04,AU12 (schema: yaw, pitch, "
              "roll, these AUs, gender). Default: the paper's six.")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Schema JSON to convert into (e.g. a trained model's attributes.json).")
@click.option("--fill", "fills", multiple=True, metavar="NAME=VALUE",
              help="Constant for a schema attribute the source has no column for (repeatable), e.g. "
              "--fill AU07=0 for LibreFace. gender=0.5 ('unknown') is filled unless you give another value.")
@click.option("--flip", default="", metavar="yaw,pitch,roll",
              help="Negate these pose angles (for a tool whose sign convention differs from the schema's).")
@click.option("--au-scale", type=click.Choice(AU_SCALES), default="auto", show_default=True,
              help="py-feat only: AU columns are probabilities (mapped to 5*p) or 0-5 intensities.")
@click.option("--id-prefix", default="", help="Replace the file-name stem that starts the row ids.")
@click.option("--clip-tolerance", type=click.FloatRange(0.0, 0.5, max_open=True),
              default=DEFAULT_CLIP_TOLERANCE, show_default=True,
              help="Values outside a range by at most this fraction of it are clipped (and listed); larger "
              "deviations reject the row.")
def convert_command(source: Path, out: Path, format_: str, min_confidence: float, aus: str | None,
                    schema_file: Path | None, fills: tuple[str, ...], flip: str, au_scale: str,
                    id_prefix: str, clip_tolerance: float) -> None:
    """Convert an attribute file (OpenFace / py-feat / LibreFace / canonical CSV / JSON) to the canonical CSV.

    Rows the tool failed on (success 0, low confidence, no face, empty/NaN values, out of range) are
    excluded and listed with row number, id and reason in OUT.rejected.csv.
    """
    schema = build_schema(aus, schema_file)
    try:
        fill = {**DEFAULT_FILL, **parse_fill(fills)}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fill") from exc
    unknown = sorted(set(fill) - set(schema.names) - set(DEFAULT_FILL))
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)} not in the schema ({', '.join(schema.names)})",
                                 param_hint="--fill")
    flips = [f.strip() for f in flip.split(",") if f.strip()]
    if source.resolve() == out.resolve():
        raise click.UsageError("--out would overwrite the source file; choose another path")
    rejected_out = rejected_path_for(out)
    try:
        table = read_attributes(source, format=format_, schema=schema, min_confidence=min_confidence,
                                fill=fill, flip=flips, au_scale=au_scale, id_prefix=id_prefix,
                                clip_tolerance=clip_tolerance)
    except (AttributeFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        write_rejected_csv(table, rejected_out)
        if len(table):
            write_canonical_csv(table, out)
    except OSError as exc:
        raise click.ClickException(f"cannot write the output: {exc}") from exc
    for line in summary_lines(table):
        click.echo(line)
    click.echo(f"wrote {rejected_out} ({len(table.rejected)} rejected row(s))")
    if not len(table):
        raise click.ClickException(f"no row of {source} was usable, so {out} was not written; "
                                   f"see {rejected_out} for the reasons")
    click.echo(f"wrote {out} ({len(table)} row(s), attributes: {', '.join(schema.names)})")


@click.command("schema")
@click.option("--aus", default=None, help="Action units, e.g. AU04,AU12 (schema: yaw, pitch, roll, these "
              "AUs, gender). Default: the paper's ten attributes.")
@click.option("--no-gender", is_flag=True, help="Leave gender out of the schema.")
def schema_command(aus: str | None, no_gender: bool) -> None:
    """Print an attribute schema as JSON (units, valid ranges, normalisation, pose convention)."""
    click.echo(build_schema(aus, None, gender=not no_gender).to_json())


@click.command("extract")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Reconstruction checkpoint (.pt from 'surrogate train recon') or a model repository folder "
                   "[default: the project's model_repository].")
@click.option("--extractor", type=click.Choice(EXTRACTORS), default="recon", show_default=True,
              help="recon: the reconstruction network; mediapipe: MediaPipe's pose and AUs (gender from recon).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CSV to write.")
@click.option("--aligned", is_flag=True, help="Inputs are already aligned face crops: skip detection.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Device for a torch checkpoint.")
def extract_command(inputs: tuple[Path, ...], model: Path | None, extractor: str, out: Path, aligned: bool,
                    device: str) -> None:
    """Estimate pose, AUs and gender of every face image in INPUTS (files or folders).

    Writes id,file,<attributes>,status,confidence per image; status is ok, no_face, face_too_small
    or unreadable, and only ok rows carry values.
    """
    from surrogate.assets import AssetMissingError
    from surrogate.landmarks import LandmarkerError
    from surrogate.synthesis import default_repository

    paths = collect_images(inputs)
    if not paths:
        raise click.ClickException("no image files found in " + ", ".join(map(str, inputs)))
    estimator = load_any_estimator(model or default_repository(), device=device)
    from surrogate.face_align import release_reader

    try:
        rows = extract_attributes(paths, estimator, aligned=aligned, extractor=extractor)
    except (AssetMissingError, LandmarkerError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        release_reader()
    atomic_write_text(out, rows_to_csv(rows, estimator.schema))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    click.echo(f"wrote {out}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
