"""Portraits of nobody: the generator's determinism, the corpus command, the linear models in w."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from surrogate.cli import cli
from surrogate.portrait_directions import (
    AttributeDirections,
    DirectionsError,
    GenderBoundary,
    boundary_gender_vector,
    conditioned_directions,
    fit_directions,
    fit_logistic,
    read_gender_labels,
    with_vector,
)
from surrogate.stats import auc


def test_conditioned_directions_move_one_readout_each() -> None:
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((3, 512)).astype(np.float32)
    truth[1] += 0.8 * truth[0]  # entangled read-outs, as smile and gender are
    w = rng.standard_normal((4000, 512)).astype(np.float32)
    y = w @ truth.T + rng.normal(0, 0.01, (4000, 3))
    fitted = fit_directions(w, y, ("a", "b", "c"), np.ones(3), np.zeros(3), l2=1.0)
    assert np.allclose(fitted.readout, truth, atol=0.02)
    assert np.allclose(fitted.readout @ fitted.vectors.T, np.eye(3), atol=1e-4)
    target = rng.standard_normal((5, 3)).astype(np.float32)
    edited = fitted.edit(w[:5], target)
    assert np.allclose(fitted.predict(edited), target, atol=1e-3)
    # The plain regression vector of "a" moves "b" too; the conditioned one does not.
    plain = truth[0] / np.linalg.norm(truth[0])
    assert abs(truth[1] @ plain) > 0.5 * np.linalg.norm(truth[0])
    assert abs(truth[1] @ conditioned_directions(truth)[0]) < 1e-4


def test_penalised_directions_still_move_the_readout_and_move_the_penalised_model_less() -> None:
    rng = np.random.default_rng(2)
    readout = rng.standard_normal((3, 64))
    identity = rng.standard_normal((10, 64))
    identity[0] += 2.0 * readout[0]  # the first attribute's plain direction drags "identity" with it
    plain = conditioned_directions(readout)
    penalised = conditioned_directions(readout, 10.0 * identity)
    assert np.allclose(readout @ penalised.T, np.eye(3), atol=1e-4)
    moved_plain = np.linalg.norm(identity @ plain.T, axis=0)
    moved_penalised = np.linalg.norm(identity @ penalised.T, axis=0)
    assert np.all(moved_penalised < moved_plain)
    assert moved_penalised[0] < 0.5 * moved_plain[0]
    # the price: longer steps in w
    assert np.all(np.linalg.norm(penalised, axis=1) >= np.linalg.norm(plain, axis=1) - 1e-6)


def test_gender_steps_along_the_boundary_normal_and_leaves_the_other_readouts_alone() -> None:
    rng = np.random.default_rng(3)
    readout = rng.standard_normal((3, 64))
    readout[2] += 1.5 * readout[0]  # gender's read-out entangled with another attribute's
    directions = AttributeDirections(("yaw", "AU12", "gender"), readout.astype(np.float32), np.zeros(3, np.float32),
                                     conditioned_directions(readout), np.ones(3, np.float32), np.zeros(3, np.float32))
    normal = readout[2] + rng.standard_normal(64)  # the labels' boundary: near, not on, gender's read-out
    boundary = GenderBoundary(normal.astype(np.float32), 0.0)
    vector = boundary_gender_vector(directions, boundary)
    edited = with_vector(directions, "gender", vector)
    assert np.allclose(edited.readout @ edited.vectors.T, np.eye(3), atol=1e-4)  # one read-out unit, others 0
    assert np.array_equal(edited.vectors[:2], directions.vectors[:2]) and edited.readout is directions.readout
    cosine = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cosine(vector, normal) > cosine(directions.vectors[2], normal)
    others = readout[:2]
    off_span = normal - others.T @ np.linalg.lstsq(others.T, normal, rcond=None)[0]
    assert cosine(vector, off_span) > 0.9999  # the normal's own part, off the other read-outs
    # a boundary whose normal lies in the other read-outs' span cannot move gender
    with pytest.raises(DirectionsError, match="does not move"):
        boundary_gender_vector(directions, GenderBoundary(readout[0].astype(np.float32), 0.0))


def test_directions_file_round_trip_and_bad_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    d = AttributeDirections(("x",), rng.standard_normal((1, 512)).astype(np.float32), np.zeros(1, np.float32),
                            rng.standard_normal((1, 512)).astype(np.float32), np.ones(1, np.float32),
                            np.zeros(1, np.float32))
    d.save(tmp_path / "d.npz", rows=3)
    again = AttributeDirections.load(tmp_path / "d.npz")
    assert again.names == ("x",) and np.array_equal(again.vectors, d.vectors)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DirectionsError, match="bad.npz"):
        AttributeDirections.load(tmp_path / "bad.npz")


def test_gender_logistic_separates_and_labels_are_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((300, 64)).astype(np.float32)
    y = (w[:, 0] + 0.3 * rng.standard_normal(300) > 0).astype(int)
    weights, bias = fit_logistic(w[:200], y[:200], l2=10.0)
    assert auc(w[200:] @ weights + bias, y[200:]) > 0.85
    labels = tmp_path / "labels.csv"
    labels.write_text("row,label\n0,m\n1,f\n2,u\n")
    assert read_gender_labels(labels) == {0: 1, 1: 0}
    labels.write_text("row,label\n0,m\n1,x\n")
    with pytest.raises(DirectionsError, match="labels.csv:3"):
        read_gender_labels(labels)


def test_portraits_merge_joins_parts_and_names_a_missing_crop(tmp_path: Path) -> None:
    from surrogate.imageio import save_png

    for part, ids in (("p1", ["000000", "000001"]), ("p2", ["000000"])):
        lines = ["id,file,yaw,gender"]
        for row in ids:
            save_png(tmp_path / part / "images64g" / f"{row}.png", np.full((8, 8), 100, np.uint8))
            lines.append(f"{row},images64g/{row}.png,1.5,0.2")
        (tmp_path / part / "attributes.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "merged"
    result = CliRunner().invoke(cli, ["data", "portraits-merge", str(tmp_path / "p1"), str(tmp_path / "p2"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((out / "attributes.csv").read_text())))
    assert [r["id"] for r in rows] == ["p1_000000", "p1_000001", "p2_000000"]  # same row ids, kept apart
    assert all((out / r["file"]).is_file() for r in rows) and rows[2]["yaw"] == "1.5"
    (tmp_path / "p2" / "images64g" / "000000.png").unlink()
    again = CliRunner().invoke(cli, ["data", "portraits-merge", str(tmp_path / "p2"), "--out", str(tmp_path / "m2")])
    assert again.exit_code != 0 and "row 000000" in again.output



def test_portraits_merge_reads_each_crop_size_own_csv_and_reencodes(tmp_path: Path) -> None:
    from PIL import Image

    from surrogate.imageio import save_png
    from surrogate.portrait_corpus import attributes_file

    assert attributes_file("images64g") == "attributes.csv"
    assert attributes_file("images128c") == "attributes_images128c.csv"
    part = tmp_path / "p1"
    rng = np.random.default_rng(0)
    save_png(part / "images128c" / "000000.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    (part / attributes_file("images128c")).write_text("id,file,yaw\n000000,images128c/000000.png,2.0\n")
    (part / "attributes.csv").write_text("id,file,yaw\n")  # the 64 px CSV of the same corpus is not read
    out = tmp_path / "merged"
    result = CliRunner().invoke(cli, ["data", "portraits-merge", str(part), "--out", str(out), "--crops",
                                      "images128c", "--encode", "jpeg", "--quality", "90"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((out / "attributes.csv").read_text())))
    assert [r["file"] for r in rows] == ["images128c/p1_000000.jpg"]
    with Image.open(out / rows[0]["file"]) as image:
        assert image.format == "JPEG" and image.size == (16, 16) and image.mode == "RGB"
    webp = CliRunner().invoke(cli, ["data", "portraits-merge", str(part), "--out", str(tmp_path / "w"), "--crops",
                                    "images128c", "--encode", "webp", "--limit", "1"])
    assert webp.exit_code == 0 and (tmp_path / "w" / "images128c" / "p1_000000.webp").is_file(), webp.output
    missing = CliRunner().invoke(cli, ["data", "portraits-merge", str(part), "--out", str(out), "--crops",
                                       "images256c"])
    assert missing.exit_code != 0 and "attributes_images256c.csv" in missing.output



def test_concat_tables_joins_parts_row_aligned_and_pads_edit_columns() -> None:
    from surrogate.portrait_corpus import CorpusTable, concat_tables

    def table(n: int, k: int, names: tuple[str, ...], offset: float) -> CorpusTable:
        return CorpusTable(np.arange(n), np.arange(n) + 100, np.full((n, 4), offset, np.float32),
                           np.ones((n, k), np.float32), np.zeros(n, np.float32), np.ones(n, bool),
                           np.zeros((n, 52), np.float32), np.full((n, 3), offset, np.float32), names)

    natural, edited = table(2, 0, (), 1.0), table(3, 2, ("yaw", "AU12"), 2.0)
    joined = concat_tables([natural, edited])
    assert joined.w.shape == (5, 4) and joined.coefficients.shape == (5, 2)
    assert joined.coefficients[:2].sum() == 0 and joined.coefficients[2:].sum() == 6  # natural rows: no edit
    assert joined.pose[:, 0].tolist() == [1, 1, 2, 2, 2] and joined.direction_names == ("yaw", "AU12")
    assert concat_tables([natural]) is natural


openvino = pytest.importorskip("openvino", reason="the portraits extra (openvino) is not installed")


@pytest.fixture(scope="module")
def generator():
    from surrogate.assets import AssetMissingError
    from surrogate.portraits import PortraitGenerator

    try:
        return PortraitGenerator(batch=2)
    except AssetMissingError as exc:  # pragma: no cover - the install step fetches the model
        pytest.fail(f"the portrait model is not fetched: {exc}")


def test_portraits_depend_on_the_seed_alone(generator) -> None:
    from surrogate.portraits import PortraitGenerator

    w = generator.w([11, 12, 13])
    alone = PortraitGenerator(batch=1).w([12])
    assert np.array_equal(w[1], alone[0])  # not on the batch or its neighbours
    images = generator.render(w[:2], side=128)
    again = generator.render(w[1:2], side=128)  # alone in a padded batch
    assert images.shape == (2, 128, 128, 3) and images.dtype == np.uint8
    assert np.array_equal(images[1], again[0])
    assert np.abs(images[0].astype(int) - images[1]).mean() > 10  # two seeds, two people


def test_truncation_pulls_towards_the_mean(generator) -> None:
    from surrogate.portraits import PortraitGenerator

    far = PortraitGenerator(psi=1.0, batch=2).w([5])[0]
    near = generator.w([5], psi=0.0)[0]
    assert np.allclose(near, generator.w_avg, atol=1e-5)
    assert np.linalg.norm(generator.w([5])[0] - generator.w_avg) < np.linalg.norm(far - generator.w_avg)


def test_portraits_command_builds_a_resumable_corpus(tmp_path: Path) -> None:
    pytest.importorskip("mediapipe", reason="the portraits extra (mediapipe) is not installed")
    out = tmp_path / "corpus"
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "portraits", "--n", "3", "--out", str(out), "--seed", "4"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((out / "attributes.csv").read_text())))
    assert rows and list(rows[0])[:3] == ["id", "file", "yaw"]
    assert all((out / r["file"]).is_file() for r in rows)
    summary = json.loads((out / "corpus.json").read_text())
    assert summary["counts"]["rendered"] == 3 and "non-commercial" in summary["licence"]
    frames = sorted((out / "frames").glob("*.jpg"))
    stamps = [f.stat().st_mtime_ns for f in frames]
    again = runner.invoke(cli, ["data", "portraits", "--n", "3", "--out", str(out), "--seed", "4"])
    assert again.exit_code == 0, again.output
    assert [f.stat().st_mtime_ns for f in frames] == stamps  # nothing rendered twice
    other = runner.invoke(cli, ["data", "portraits", "--n", "3", "--out", str(out), "--seed", "5"])
    assert other.exit_code != 0 and "seed=4" in other.output
    with np.load(out / "latents.npz") as latents:
        assert latents["w"].shape == (3, 512) and len(set(latents["seeds"].tolist())) == 3
