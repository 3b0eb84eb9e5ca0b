"""Packaging of the HTTP API's answers: which model made a surrogate, its headers, and the ZIP (PNGs +
status.csv) answering an uploaded attribute file."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import numpy as np

from surrogate.imageio import encode_png, safe_file_stem
from surrogate.runtime import ModelInfo


def producing_model(method: str, gan: ModelInfo | None) -> dict[str, Any] | None:
    """``{"name", "version"}`` of what drew a surrogate: the served generator, or the 3-D face model at
    its version (a surrogate depends only on attributes, seed and this)."""
    if method == "3d":
        from surrogate.synthesis_3d import model_version

        name, version = model_version()
        return {"name": name, "version": int(version)}
    return {"name": gan.name, "version": gan.version} if gan is not None else None


def model_headers(method: str, gan: ModelInfo | None) -> dict[str, str]:
    """``X-Surrogate-Model`` and ``-Version`` of what drew a surrogate (none when no model is known)."""
    made_by = producing_model(method, gan)
    if made_by is None:
        return {}
    return {"X-Surrogate-Model": made_by["name"], "X-Surrogate-Model-Version": str(made_by["version"])}


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: object) -> str:
    """A text cell that a spreadsheet will not run: ids and reasons come from the uploader, and a cell
    starting with ``= + - @``, tab or CR is a formula in Excel/LibreOffice, so it gets a leading ``'``."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def build_zip(
    table: Any, images: np.ndarray, seeds: list[int], n: int, method: str, gan: ModelInfo | None
) -> bytes:
    """PNGs named ``<id>_<k>.png`` plus status.csv with one line per source row (ok or rejected + reason)."""
    buffer = io.BytesIO()
    status = io.StringIO()
    writer = csv.writer(status)
    writer.writerow(["row", "id", "status", "reason", "seed", "files", "method", "model", "model_version"])
    made_by = producing_model(method, gan)
    model_name, model_version = (made_by["name"], made_by["version"]) if made_by else ("", "")
    used_names: set[str] = set()
    rows: list[tuple[int, list[Any]]] = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for r, (row_id, source_row) in enumerate(
            zip(table.ids, table.rows or range(1, len(table.ids) + 1), strict=False)
        ):
            stem = safe_file_stem(row_id, fallback=f"row{source_row}", max_length=120)
            while stem in used_names:
                stem += "_"
            used_names.add(stem)
            names = []
            for k in range(n):
                name = f"images/{stem}_{k}.png"
                archive.writestr(name, encode_png(images[r * n + k]))
                names.append(name)
            rows.append(
                (
                    source_row,
                    [
                        source_row,
                        csv_text(row_id),
                        "ok",
                        "",
                        seeds[r * n],
                        " ".join(names),
                        method,
                        model_name,
                        model_version,
                    ],
                )
            )
        for rejected in table.rejected:
            rows.append(
                (
                    rejected.row,
                    [
                        rejected.row,
                        csv_text(rejected.id),
                        "rejected",
                        csv_text(rejected.reason),
                        "",
                        "",
                        method,
                        model_name,
                        model_version,
                    ],
                )
            )
        for _, line in sorted(rows, key=lambda item: item[0]):
            writer.writerow(line)
        archive.writestr("status.csv", status.getvalue())
    return buffer.getvalue()
