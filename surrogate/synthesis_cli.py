"""The synthesis commands: ``surrogate synthesize`` and ``surrogate synthesize-batch``.

``synthesize``: an attribute file in any adapter format -> surrogate PNGs + manifest, in one process.

``synthesize-batch``: resumable, sharded synthesis for large attribute files. The engine is
``surrogate.batch``; the command only turns options into a run and errors into messages. Exit status:
0 when the shard is finished (per-row failures are listed in the error CSV and retried by the next
run), 1 for bad input or options, 75 (EX_TEMPFAIL) when the backend cannot be reached, so that a
Kubernetes Job retries the pod instead of failing the whole Job.

Both name surrogate k of row i by the runtime's seed rule (``surrogate.runtime.row_seed``), so they
give the same image for the same row.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from surrogate.imageio import atomic_write_text, safe_file_stem, save_png
from surrogate.noise import MAX_SEED
from surrogate.runtime import row_seed
from surrogate.synthesis import METHODS, check_size, method_schema, synthesize

__all__ = ["synthesize_batch_command", "synthesize_command"]

# The options both commands share, so that they mean the same in both.
method_option = click.option("--method", type=click.Choice(METHODS), default="3d", show_default=True,
                             help="3d: the parametric face model; gan: the conditional BEGAN-CS generator; "
                                  "photoreal: steered portraits of nobody (research / non-commercial use only; "
                                  "--size 64, 128 or 256).")
rgb_option = click.option("--rgb/--grey", default=False, show_default=True,
                          help="Colour or grey output (the 3-D and photoreal methods; the GAN is grey).")
seed_option = click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
                           help="Base seed; surrogate k of row i uses seed + i*n + k (in both commands).")
n_option = click.option("--n", "n_per_row", type=click.IntRange(1, 64), default=1, show_default=True,
                        help="Surrogates per attribute row.")
size_option = click.option("--size", type=click.IntRange(16, 512), default=None, help="Output size in pixels.")
format_option = click.option("--format", "file_format", default="auto", show_default=True,
                             help="Attribute file format: auto, openface, pyfeat, libreface, canonical, json.")
repository_option = click.option(
    "--repository", type=click.Path(file_okay=False), default=None,
    help="Model repository for --method gan (default: $SURROGATE_MODEL_REPOSITORY or ./model_repository).")


def image_options(command):  # noqa: ANN001, ANN201 - a click decorator
    """The options both synthesis commands share: seed, copies per row, size, colour, file format, models."""
    for option in reversed((seed_option, n_option, size_option, rgb_option, format_option, repository_option)):
        command = option(command)
    return command


@click.command(name="synthesize")
@click.option("--attributes", "attributes_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Attribute file: OpenFace / py-feat / LibreFace CSV, canonical CSV or JSON.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@method_option
@image_options
def synthesize_command(attributes_path: str, out_dir: str, method: str, seed: int, n_per_row: int,
                       size: int | None, rgb: bool, file_format: str, repository: str | None) -> None:
    """Render surrogates for every valid row of an attribute file.

    Writes OUT/<id>_<k>.png, OUT/manifest.csv (id, k, seed, method, file, attributes used) and
    OUT/rejected.csv for rows the attribute reader refused. Existing images are kept (reruns resume).
    """
    from surrogate.adapters import AttributeFileError, read_attributes

    try:
        check_size(method, size)
        schema = method_schema(method, repository)
        table = read_attributes(attributes_path, format=file_format, schema=schema)
    except (AttributeFileError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    todo: list[tuple[int, int, int, Path]] = []
    for i, row_id in enumerate(table.ids):
        for k in range(n_per_row):
            s = row_seed(seed, i, k, n_per_row)
            path = out / f"{safe_file_stem(row_id)}_{k}.png"
            rows.append({"id": row_id, "k": k, "seed": s, "method": method, "file": path.name,
                         **dict(zip(schema.names, map(float, table.values[i]), strict=True))})
            if not path.exists():
                todo.append((i, k, s, path))
    with tqdm(total=len(todo), desc=f"synthesize ({method})", unit="img") as bar:
        for start in range(0, len(todo), 64):
            chunk = todo[start: start + 64]
            images = synthesize(method, table.values[[c[0] for c in chunk]], [c[2] for c in chunk],
                                schema=schema, repository=repository, size=size, rgb=rgb)
            for (_, _, _, path), image in zip(chunk, images, strict=True):
                save_png(path, image)
            bar.update(len(chunk))
    atomic_write_text(out / "manifest.csv", _csv(rows))
    rejected = [{"row": r.row, "id": r.id, "reason": r.reason} for r in table.rejected]
    atomic_write_text(out / "rejected.csv", _csv(rejected, ["row", "id", "reason"]))
    click.echo(f"{len(rows)} surrogates in {out} ({len(todo)} rendered now, {len(rows) - len(todo)} already there); "
               f"{len(rejected)} rejected rows in {out / 'rejected.csv'}")


def _csv(rows: list[dict[str, object]], columns: list[str] | None = None) -> str:
    buffer = io.StringIO()
    columns = columns or (list(rows[0]) if rows else ["id"])
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float | np.floating) else v) for k, v in row.items()})
    return buffer.getvalue()


def read_column(path: str | Path, column: str, rows: list[int], option: str = "--subject-column") -> list[str]:
    """The cells of one CSV column for the accepted rows (``rows``: 1-based source record numbers, as the
    attribute reader numbers them); a missing column is a ValueError naming the option and the columns."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        first = handle.readline()
        delimiter = "\t" if first.count("\t") > first.count(",") else ","
        header = [name.strip() for name in next(csv.reader([first], delimiter=delimiter))]
        if column not in header:
            raise ValueError(f"{path}: {option} {column!r} is not a column (columns: {', '.join(header)})")
        index = header.index(column)
        records = list(csv.reader(handle, delimiter=delimiter))
    return [records[row - 1][index].strip() if index < len(records[row - 1]) else "" for row in rows]


def read_subjects(path: str, column: str, rows: list[int]) -> list[int]:
    """The subject number (a non-negative integer) of each accepted row, from a CSV column."""
    subjects = []
    for row, cell in zip(rows, read_column(path, column, rows), strict=True):
        try:
            subject = int(cell)
        except ValueError:
            subject = -1
        if not 0 <= subject <= MAX_SEED:
            raise ValueError(f"{path}: row {row}: --subject-column {column!r} needs a non-negative integer, "
                             f"got {cell!r}")
        subjects.append(subject)
    return subjects


EXIT_BACKEND_UNAVAILABLE = 75


class BackendUnavailableExit(click.ClickException):
    exit_code = EXIT_BACKEND_UNAVAILABLE


@click.command(name="synthesize-batch")
@click.argument("attributes_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (shared by all shards of a run).")
@click.option("--shard", default="0/1", show_default=True, metavar="INDEX/COUNT",
              help="Render only the rows r with r % COUNT == INDEX (e.g. $JOB_COMPLETION_INDEX/$SHARDS).")
@method_option
@click.option("--backend", type=click.Choice(["embedded", "triton"]), default="embedded", show_default=True,
              help="embedded: in this process (onnxruntime, 3-D renderer); triton: the GAN on Triton.")
@image_options
@click.option("--subject-column", default=None, metavar="COLUMN",
              help="A column of non-negative subject numbers (CSV files): every row of subject s is seeded as "
                   "row s would be (seed + s*n + k), and rendered at the subject's median gender, so one "
                   "private person gets one surrogate person.")
@click.option("--triton-url", envvar="SURROGATE_TRITON_URL", default="127.0.0.1:8001", show_default=True,
              help="Triton host:port for --backend triton ($SURROGATE_TRITON_URL).")
@click.option("--triton-protocol", envvar="SURROGATE_TRITON_PROTOCOL", type=click.Choice(["grpc", "http"]),
              default="grpc", show_default=True, help="Triton transport ($SURROGATE_TRITON_PROTOCOL).")
@click.option("--chunk-size", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Images per model call and per journal append (a kill redoes at most one chunk).")
def synthesize_batch_command(attributes_file: str, out_dir: str, shard: str, method: str, backend: str,
                             seed: int, n_per_row: int, size: int | None, rgb: bool, file_format: str,
                             repository: str | None, subject_column: str | None, triton_url: str,
                             triton_protocol: str, chunk_size: int) -> None:
    """Render surrogates for every valid row of ATTRIBUTES_FILE into OUT, resumably.

    Writes OUT/images/<id>_<k>.png, a manifest journal OUT/manifest[.shard-I-of-N].jsonl (one line
    per finished image, with seed, model version and PNG sha256), its CSV form when the shard is
    done, and OUT/errors[...].csv (rejected and failed rows). Rerunning the same command after a
    kill or a failure finishes the rest without redoing journaled images.
    """
    from surrogate.adapters import AttributeFileError, read_attributes
    from surrogate.batch import (
        BackendUnavailableError,
        BatchError,
        Shard,
        embedded_renderer,
        run_batch,
        triton_renderer,
    )

    try:
        parsed_shard = Shard.parse(shard)
        if backend == "triton":
            if method != "gan":
                raise BatchError("--backend triton serves the GAN only; the 3-D method renders in-process "
                                 "(use --backend embedded)")
            renderer = triton_renderer(url=triton_url, protocol=triton_protocol, repository=repository,
                                       size=size)
        else:
            renderer = embedded_renderer(method, repository=repository, size=size, rgb=rgb)
        table = read_attributes(attributes_file, format=file_format, schema=renderer.schema)
        subjects = (None if subject_column is None
                    else read_subjects(attributes_file, subject_column, table.rows or list(range(1, len(table) + 1))))
        rejected = [{"row": r.row, "id": r.id, "reason": r.reason} for r in table.rejected]
        result = run_batch(table.values, table.ids, out_dir, renderer, source_rows=table.rows or None,
                           rejected=rejected, shard=parsed_shard, seed=seed, n_per_row=n_per_row,
                           chunk_size=chunk_size, source=str(attributes_file), subjects=subjects)
    except BackendUnavailableError as exc:
        raise BackendUnavailableExit(f"backend unavailable, nothing lost; rerun to continue: {exc}") from exc
    except (AttributeFileError, BatchError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"shard {result.shard.index}/{result.shard.count}: {result.planned} images planned, "
        f"{result.already_done} already done, {result.rendered} rendered now, {result.failed} failed, "
        f"{result.rejected} rows rejected; manifest {result.manifest}, errors {result.errors}"
    )
    if result.failed:
        click.echo(f"{result.failed} images failed (see {result.errors}); rerun the same command to retry.",
                   err=True)


if __name__ == "__main__":
    synthesize_batch_command()  # tests run it as a module
