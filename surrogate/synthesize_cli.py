"""``surrogate synthesize``: an attribute file in any adapter format -> surrogate PNGs + manifest."""

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
from surrogate.synthesis import METHODS, method_schema, synthesize

__all__ = ["row_seed", "safe_file_stem", "synthesize_command"]  # row_seed: older callers import it here


@click.command(name="synthesize")
@click.option("--attributes", "attributes_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Attribute file: OpenFace / py-feat / LibreFace CSV, canonical CSV or JSON.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--method", type=click.Choice(METHODS), default="3d", show_default=True,
              help="3d: the parametric face model; gan: the conditional BEGAN-CS generator.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Base seed; surrogate k of row i uses seed + i*n + k.")
@click.option("--n", "n_per_row", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Surrogates per attribute row.")
@click.option("--size", type=click.IntRange(16, 512), default=None, help="Output size in pixels.")
@click.option("--format", "file_format", default="auto", show_default=True, help="Attribute file format.")
@click.option("--repository", type=click.Path(file_okay=False), default=None,
              help="Model repository for --method gan (default: $SURROGATE_MODEL_REPOSITORY or ./model_repository).")
def synthesize_command(attributes_path: str, out_dir: str, method: str, seed: int, n_per_row: int,
                       size: int | None, file_format: str, repository: str | None) -> None:
    """Render surrogates for every valid row of an attribute file.

    Writes OUT/<id>_<k>.png, OUT/manifest.csv (id, k, seed, method, file, attributes used) and
    OUT/rejected.csv for rows the attribute reader refused. Existing images are kept (reruns resume).
    """
    from surrogate.adapters import AttributeFileError, read_attributes

    try:
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
                                schema=schema, repository=repository, size=size)
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
