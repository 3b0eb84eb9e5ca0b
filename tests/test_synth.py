"""The synthetic dataset: CLI, determinism per (seed, row), resume, loader errors, distribution, sheet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from surrogate.cli import cli
from surrogate.imageio import load_image
from surrogate.render import RENDERER_VERSION
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema
from surrogate.training_data import (
    DatasetError,
    SynthDistribution,
    load_dataset,
    sample_row,
    synthesize_dataset,
)


def _synth(out: Path, *extra: str) -> None:
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output


def test_cli_writes_the_documented_layout(tmp_path):
    out = tmp_path / "ds"
    _synth(out, "--n", "10", "--seed", "3", "--size", "32")
    for name in ("schema.json", "attributes.csv", "params.npz", "synth.json"):
        assert (out / name).is_file()
    header = (out / "attributes.csv").read_text().splitlines()[0].split(",")
    assert header == ["id", "file", "identity", *DEFAULT_SCHEMA.names]
    data = load_dataset(out)
    assert len(data) == 10 and data.values.shape == (10, len(DEFAULT_SCHEMA))
    assert data.schema == DEFAULT_SCHEMA
    assert all(f.is_absolute() and f.is_file() for f in data.files)
    DEFAULT_SCHEMA.validate_array(data.values)  # every value within its valid range
    assert list(data.identities) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert data.load_images([0]).shape == (1, 32, 32)
    params = data.params()
    assert params["identity_coefficients"].shape[0] == 10 and params["lighting"].shape == (10, 4)
    assert not list(out.rglob("*.part"))


def test_same_seed_gives_the_same_rows_whatever_n(tmp_path):
    _synth(tmp_path / "a", "--n", "6", "--seed", "5", "--size", "32")
    _synth(tmp_path / "b", "--n", "9", "--seed", "5", "--size", "32")
    _synth(tmp_path / "c", "--n", "6", "--seed", "6", "--size", "32")
    a, b, c = (load_dataset(tmp_path / k) for k in "abc")
    np.testing.assert_array_equal(a.values, b.values[:6])
    for i in range(6):
        np.testing.assert_array_equal(load_image(a.files[i], grayscale=True), load_image(b.files[i], grayscale=True))
    assert not np.array_equal(a.values, c.values)


def test_worker_processes_write_identical_files(tmp_path):
    _synth(tmp_path / "one", "--n", "12", "--seed", "2", "--size", "32")
    _synth(tmp_path / "two", "--n", "12", "--seed", "2", "--size", "32", "--workers", "2", "--batch-size", "4")
    for name in ("attributes.csv", "params.npz"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    for image in (tmp_path / "one" / "images").iterdir():
        assert image.read_bytes() == (tmp_path / "two" / "images" / image.name).read_bytes()


def test_rerun_resumes_and_rejects_other_settings(tmp_path):
    out = tmp_path / "ds"
    rendered, skipped = synthesize_dataset(out, 5, seed=1, size=32, progress=False)
    assert (rendered, skipped) == (5, 0)
    first = (out / "images" / "0000002.png").read_bytes()
    (out / "images" / "0000002.png").unlink()
    (out / "attributes.csv").unlink()  # as if killed before the end: the CSV is rebuilt
    rendered, skipped = synthesize_dataset(out, 8, seed=1, size=32, progress=False)
    assert (rendered, skipped) == (4, 4)
    assert (out / "images" / "0000002.png").read_bytes() == first
    assert len(load_dataset(out)) == 8
    with pytest.raises(ValueError, match="seed"):
        synthesize_dataset(out, 8, seed=2, size=32, progress=False)
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--n", "8", "--seed", "1", "--size", "48"])
    assert result.exit_code != 0 and "size" in result.output and "Traceback" not in result.output


def test_a_folder_drawn_by_another_renderer_is_not_completed(tmp_path):
    """After a renderer change, completing an old folder would mix two looks of the same faces."""
    out = tmp_path / "ds"
    synthesize_dataset(out, 2, seed=1, size=32, progress=False)
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["renderer"] == RENDERER_VERSION
    for previous in ("1", None):  # an older renderer, or a folder from before versions were recorded
        if previous is None:
            manifest.pop("renderer")
        else:
            manifest["renderer"] = previous
        (out / "synth.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=f"renderer version {previous or 'unrecorded'} drew it"):
            synthesize_dataset(out, 4, seed=1, size=32, progress=False)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0000000.png", "0000001.png"]


def test_rgb_and_another_schema(tmp_path):
    schema = AttributeSchema.from_names(["yaw", "AU01", "AU12", "AU26"])
    (tmp_path / "schema.json").write_text(schema.to_json())
    _synth(tmp_path / "ds", "--n", "3", "--size", "24", "--rgb", "--schema", str(tmp_path / "schema.json"))
    data = load_dataset(tmp_path / "ds")
    assert data.schema.names == ("yaw", "AU01", "AU12", "AU26")
    assert data.load_images().shape == (3, 24, 24, 3)


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="no such"):
        load_dataset(tmp_path / "nothing")
    out = tmp_path / "ds"
    synthesize_dataset(out, 7, seed=0, size=16, progress=False)
    (out / "images" / "0000004.png").unlink()
    with pytest.raises(DatasetError, match="0000004.png"):
        load_dataset(out)
    csv = out / "attributes.csv"
    csv.write_text(csv.read_text().replace("AU12", "AU99"))
    with pytest.raises(DatasetError, match="AU12"):
        load_dataset(out)
    csv.unlink()
    with pytest.raises(DatasetError, match="attributes.csv"):
        load_dataset(out)


def test_distribution_file_overrides_and_rejects_unknown_keys(tmp_path):
    toml = tmp_path / "dist.toml"
    toml.write_text("images_per_identity = 2\n[pose]\nyaw_std = 1.0\nwide_fraction = 0.0\n")
    dist = SynthDistribution.from_file(toml)
    assert dist.images_per_identity == 2 and dist.pose.yaw_std == 1.0
    assert dist.expression == SynthDistribution().expression
    rows = [sample_row(0, i, DEFAULT_SCHEMA, dist, 16, False) for i in range(40)]
    assert max(abs(r.values[0]) for r in rows) < 5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pose": {"yaw_sd": 3}}))
    with pytest.raises(ValueError, match="yaw_sd"):
        SynthDistribution.from_file(bad)
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "x"), "--n", "2",
                                      "--distribution", str(bad)])
    assert result.exit_code != 0 and "yaw_sd" in result.output


def test_default_distribution_resembles_real_data():
    dist = SynthDistribution()
    rows = [sample_row(11, i, DEFAULT_SCHEMA, dist, 16, False) for i in range(600)]
    values = np.stack([r.values for r in rows])
    col = {name: values[:, i] for i, name in enumerate(DEFAULT_SCHEMA.names)}
    assert np.mean(np.abs(col["yaw"]) < 20) > 0.7  # mostly near-frontal
    assert np.abs(col["yaw"]).max() > 30  # but not only
    aus = values[:, 3:9]
    assert np.mean(aus < 0.5) > 0.6  # sparse
    assert np.corrcoef(col["AU06"], col["AU12"])[0, 1] > 0.5  # smiles
    assert np.corrcoef(col["AU04"], col["AU07"])[0, 1] > 0.3  # anger-like
    gender = col["gender"]
    assert np.mean((gender < 0.15) | (gender > 0.85)) > 0.7
    assert np.mean(gender > 0.5) > 0.3 and np.mean(gender < 0.5) > 0.3
    lighting = np.array([r.params.light_azimuth for r in rows])
    assert lighting.std() > 10
    assert len({r.identity for r in rows}) == 150


def test_sheet_cli_draws_captions(tmp_path):
    out = tmp_path / "ds"
    synthesize_dataset(out, 6, seed=0, size=32, progress=False)
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(cli, ["data", "sheet", str(out), "--out", str(sheet), "--n", "6", "--columns", "3"])
    assert result.exit_code == 0, result.output
    image = load_image(sheet)
    assert image.shape[1] > 3 * 128 and image.shape[0] > 2 * 128
    missing = CliRunner().invoke(cli, ["data", "sheet", str(tmp_path), "--out", str(sheet)])
    assert missing.exit_code != 0 and "schema.json" in missing.output


def test_caption_names_pose_strongest_aus_and_gender():
    from surrogate.sheet import caption

    lines = caption(DEFAULT_SCHEMA, np.array([12, -3, 1, 0, 0, 2.5, 0, 4.1, 0.2, 0.93]))
    assert lines[0].startswith("yaw +12")
    assert lines[1] == "AU12 4.1 AU06 2.5"
    assert lines[2].startswith("male")


def test_ict_face_model_draws_the_same_rows_and_is_not_mixed_with_the_parametric_one(tmp_path):
    ict, parametric = tmp_path / "ict", tmp_path / "parametric"
    _synth(ict, "--n", "3", "--seed", "4", "--size", "32", "--face-model", "ict")
    synthesize_dataset(parametric, 3, seed=4, size=32, progress=False)
    manifest = json.loads((ict / "synth.json").read_text())
    assert manifest["face_model"] == "ict" and manifest["renderer"].startswith("ict-")
    a, b = load_dataset(ict), load_dataset(parametric)
    np.testing.assert_array_equal(a.values, b.values)  # same rows, another face model
    assert np.abs(load_image(a.files[0]).astype(int) - load_image(b.files[0])).mean() > 3
    with pytest.raises(ValueError, match="renderer version ict-"):  # resumed without --face-model ict
        synthesize_dataset(ict, 4, seed=4, size=32, progress=False)
    with pytest.raises(ValueError, match="face_model"):
        synthesize_dataset(tmp_path / "other", 2, face_model="ict2", progress=False)
