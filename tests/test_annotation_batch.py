"""Export: the crowd batch holds nothing private; the mapping holds everything needed to go back."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from annotation.batch import ExportError, export_batch, load_manifest
from annotation.mapping import PrivateMapping
from annotation.question import GoldRule, Question
from surrogate.schema import DEFAULT_SCHEMA

PRIVATE_IDS = ["alice_hernandez_2019", "bob_okafor_visit3", "carol_zhang_clinic7"]
# distinctive values (4+ significant digits) so a leak cannot hide among ordinary numbers
VALUES = {
    "yaw": [12.3457, -7.6543, 3.2109],
    "AU12": [4.3219, 0.1357, 2.4681],
    "gender": [0.8642, 0.1975, 0.5319],
}
SECRET_METADATA = "Patient: Alice Hernandez, DOB 1970-01-01"


def _png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append(kind.decode("ascii"))
        pos += 12 + length
    return chunks


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    """A canonical attribute CSV of three private faces, with photos that carry private metadata."""
    photos = tmp_path / "private" / "photos"
    photos.mkdir(parents=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET_METADATA)
    rows = []
    for i, pid in enumerate(PRIVATE_IDS):
        Image.fromarray(np.full((40, 40, 3), 60 + 40 * i, np.uint8)).save(photos / f"{pid}.png", pnginfo=info)
        row = {"id": pid, "file": f"photos/{pid}.png"}
        row.update({n: VALUES.get(n, [0.0] * 3)[i] for n in DEFAULT_SCHEMA.names})
        rows.append(row)
    path = tmp_path / "private" / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "file", *DEFAULT_SCHEMA.names])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _assert_nothing_private(batch: Path, manifest: Path) -> None:
    forbidden = [
        *PRIVATE_IDS,
        *(f"{p}.png" for p in PRIVATE_IDS),
        "photos/",
        str(manifest.parent),
        "Hernandez",
        "manifest",
    ]
    for values in VALUES.values():
        for v in values:
            forbidden += [repr(v), f"{v:g}", f"{v:.4f}", repr(float(np.float32(v)))]
    files = [p for p in batch.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for needle in forbidden:
            assert needle.encode() not in data, f"{needle!r} leaked into {path.name}"
        if path.suffix == ".png":
            assert set(_png_chunks(data)) <= {"IHDR", "PLTE", "IDAT", "IEND"}, (
                f"{path.name} carries metadata chunks"
            )


def test_raw_pilot_batch_leaks_nothing(tmp_path: Path, manifest: Path) -> None:
    table = load_manifest(manifest)
    summary = export_batch(
        table,
        tmp_path / "batch",
        tmp_path / "private" / "mapping.json",
        question=Question(),
        methods=(),
        include_raw=True,
        image_root=manifest.parent,
        progress=False,
    )
    assert summary.n_items == 3
    _assert_nothing_private(tmp_path / "batch", manifest)
    mapping = PrivateMapping.read(summary.mapping_path)
    assert sorted(e.private_id for e in mapping.entries) == sorted(PRIVATE_IDS)
    assert all(e.method == "raw" and e.seed is None for e in mapping.entries)


def test_surrogate_batch_with_gold_leaks_nothing_and_is_reproducible(tmp_path: Path, manifest: Path) -> None:
    pytest.importorskip("surrogate.synthesis_3d")
    table = load_manifest(manifest)
    gold = [GoldRule.parse("joy=AU12:5,AU06:4"), GoldRule.parse("not joy=AU12:0")]
    runs = []
    for run in ("one", "two"):
        summary = export_batch(
            table,
            tmp_path / run,
            tmp_path / "private" / f"{run}.json",
            question=Question(),
            methods=("3d",),
            include_raw=True,
            image_root=manifest.parent,
            seed=11,
            size=32,
            gold_rules=gold,
            gold_per_rule=2,
            progress=False,
        )
        assert (summary.n_items, summary.n_gold) == (6, 4)
        _assert_nothing_private(tmp_path / run, manifest)
        runs.append(PrivateMapping.read(summary.mapping_path))
    first, second = runs
    # tokens are fresh random names, but order, seeds and pixels follow the batch seed
    assert set(first.tokens).isdisjoint(second.tokens)
    key = [(e.kind, e.private_id, e.method, e.seed, e.gold_label) for e in first.entries]
    assert key == [(e.kind, e.private_id, e.method, e.seed, e.gold_label) for e in second.entries]
    for a, b in zip(first.entries, second.entries, strict=True):
        assert (tmp_path / "one" / "images" / f"{a.token}.png").read_bytes() == (
            tmp_path / "two" / "images" / f"{b.token}.png"
        ).read_bytes()
    assert [e.method for e in first.entries] != ["3d"] * 7 + ["raw"] * 3  # crowd order is a seeded shuffle
    gold_entries = first.gold()
    assert {e.gold_label for e in gold_entries} == {"joy", "not joy"}
    assert all(first.attribute(e, "AU12") == 5.0 for e in gold_entries if e.gold_label == "joy")
    tasks = json.loads((tmp_path / "one" / "labelstudio_tasks.json").read_text())
    assert [t["data"]["token"] for t in tasks] == first.tokens


def test_platform_files_match_the_question(tmp_path: Path, manifest: Path) -> None:
    question = Question(name="anger", text="Is this face angry?", choices=("angry", "not angry", "unsure"))
    export_batch(
        load_manifest(manifest),
        tmp_path / "b",
        tmp_path / "m.json",
        question=question,
        methods=(),
        include_raw=True,
        image_root=manifest.parent,
        url_prefix="https://cdn.example.org/b1",
        progress=False,
    )
    config = (tmp_path / "b" / "labelstudio_config.xml").read_text()
    assert '<Choices name="anger"' in config and '<Choice value="unsure"/>' in config
    template = (tmp_path / "b" / "mturk_template.html").read_text()
    assert 'name="anger.option_2"' in template and "${image_url}" in template
    assert template.count("<script") == 1 and "assets.crowd.aws/crowd-html-elements.js" in template
    rows = list(csv.DictReader((tmp_path / "b" / "mturk_input.csv").open()))
    assert all(r["image_url"] == f"https://cdn.example.org/b1/{r['token']}.png" for r in rows)
    assert all((tmp_path / "b" / "images" / f"{r['token']}.png").is_file() for r in rows)


def test_unsafe_or_bad_requests_are_refused(tmp_path: Path, manifest: Path) -> None:
    table = load_manifest(manifest)
    kwargs = dict(
        question=Question(), methods=(), include_raw=True, image_root=manifest.parent, progress=False
    )
    with pytest.raises(ExportError, match="must not be inside the crowd batch"):
        export_batch(table, tmp_path / "b", tmp_path / "b" / "mapping.json", **kwargs)
    with pytest.raises(ExportError, match="not one of the choices"):
        export_batch(
            table,
            tmp_path / "c",
            tmp_path / "c.json",
            question=Question(),
            methods=("3d",),
            gold_rules=[GoldRule.parse("happy=AU12:5")],
            progress=False,
        )
    with pytest.raises(ExportError, match="not found"):
        export_batch(table, tmp_path / "d", tmp_path / "d.json", **{**kwargs, "image_root": tmp_path})
    export_batch(table, tmp_path / "e", tmp_path / "e.json", **kwargs)
    with pytest.raises(ExportError, match="not empty"):
        export_batch(table, tmp_path / "e", tmp_path / "e2.json", **kwargs)
    with pytest.raises(ValueError, match="at least two choices"):
        Question(choices=("joy",))
