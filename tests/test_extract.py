"""Face detection/alignment and ``surrogate attributes extract`` on real files (torch checkpoint path)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from surrogate.cli import cli
from surrogate.face_align import (
    agreement_confidence,
    align_face,
    crop_square,
    mirror_attributes,
    prepare_crops,
    to_gray,
)
from surrogate.imageio import save_png
from surrogate.schema import DEFAULT_SCHEMA

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained (random-weight) network saved the way training saves it: enough for I/O tests."""
    from training.recon.checkpoint import build_network, export_weights
    from training.recon.config import ReconConfig
    from training.recon.data import lighting_ranges

    config = ReconConfig()
    low, high = lighting_ranges(config.augment)
    torch.manual_seed(0)
    net = build_network(config.to_dict(), 16, low.tolist(), high.tolist())
    path = tmp_path_factory.mktemp("model") / "model.pt"
    export_weights({"config": config.to_dict(), "schema": DEFAULT_SCHEMA.to_json(), "n_identity": 16,
                    "lighting_low": low.tolist(), "lighting_high": high.tolist(), "model": net.state_dict()}, path)
    return path


def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


def test_mirror_attributes_flips_only_yaw_and_roll() -> None:
    row = np.array([[10, 5, -7, 1, 2, 3, 4, 5, 0, 0.8]], np.float32)
    mirrored = mirror_attributes(DEFAULT_SCHEMA, row)
    assert mirrored[0].tolist() == pytest.approx([-10, 5, 7, 1, 2, 3, 4, 5, 0, 0.8])
    assert mirror_attributes(DEFAULT_SCHEMA, mirrored) == pytest.approx(row)


def test_agreement_confidence_is_one_when_consistent_and_drops_otherwise() -> None:
    row = np.array([[10, 5, -7, 1, 2, 3, 4, 5, 0, 0.8]], np.float32)
    assert agreement_confidence(DEFAULT_SCHEMA, row, mirror_attributes(DEFAULT_SCHEMA, row))[0] == pytest.approx(1.0)
    assert agreement_confidence(DEFAULT_SCHEMA, row, row)[0] < 0.6  # yaw/roll disagree by 20 and 14 degrees


def test_prepare_crops_handles_gray_rgb_and_any_size() -> None:
    gray = np.full((25, 25), 100, np.uint8)
    rgb = np.zeros((90, 90, 3), np.uint8)
    rgb[..., 0] = 255
    out = prepare_crops([gray, rgb], 64, 1)
    assert out.shape == (2, 1, 64, 64) and out.dtype == np.uint8
    assert out[0].min() == out[0].max() == 100
    assert out[1].max() == round(0.299 * 255)
    with pytest.raises(ValueError, match="uint8"):
        prepare_crops([gray.astype(np.float32)], 64)


def test_to_gray_rejects_odd_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((4, 4, 2), np.uint8))


def test_crop_square_replicates_edges_outside_the_image() -> None:
    image = np.tile(np.arange(100, dtype=np.uint8), (100, 1))
    crop = crop_square(image, 0, 50, 40, 20)
    assert crop.shape == (20, 20)
    assert crop[:, 0].max() == 0  # left half lies outside the image: replicated column 0


def test_finds_the_astronaut_face_and_frames_it() -> None:
    image = astronaut()
    face = align_face(image, 64)
    assert face is not None and face.crop.shape == (64, 64)
    cx, cy, side = face.frame
    # Her face is around x 175-270, y 65-165 in the 512 x 512 image; the crop holds it with some hair.
    assert 180 < cx < 270 and 80 < cy < 160 and 110 < side < 260
    colour = align_face(image, 128, channels=3)
    assert colour is not None and colour.crop.shape == (128, 128, 3)


def test_no_face_in_flat_or_noise_images() -> None:
    rng = np.random.default_rng(0)
    assert align_face(np.full((200, 200), 128, np.uint8)) is None
    assert align_face(rng.integers(0, 256, (200, 200), dtype=np.uint8)) is None


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_extract_cli_gives_every_image_an_explicit_status(tmp_path: Path, random_checkpoint: Path) -> None:
    images = tmp_path / "images"
    save_png(images / "astronaut.png", astronaut())
    save_png(images / "blank.png", np.full((120, 120), 200, np.uint8))
    (images / "broken.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "attributes.csv"
    result = CliRunner().invoke(cli, ["attributes", "extract", str(images), "--model", str(random_checkpoint),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in read_rows(out)}
    assert list(read_rows(out)[0]) == ["id", "file", *DEFAULT_SCHEMA.names, "status", "confidence"]
    assert rows["astronaut"]["status"] == "ok"
    values = [float(rows["astronaut"][n]) for n in DEFAULT_SCHEMA.names]
    assert DEFAULT_SCHEMA.validate_records([dict(zip(DEFAULT_SCHEMA.names, values, strict=True))]).shape == (1, 10)
    assert 0.0 < float(rows["astronaut"]["confidence"]) <= 1.0
    assert rows["blank"]["status"] == "no_face" and rows["blank"]["yaw"] == "" and rows["blank"]["confidence"] == ""
    assert rows["broken"]["status"] == "unreadable" and rows["broken"]["AU12"] == ""


def test_extract_cli_aligned_skips_detection(tmp_path: Path, random_checkpoint: Path) -> None:
    save_png(tmp_path / "crop_a.png", np.full((64, 64), 90, np.uint8))
    save_png(tmp_path / "sub" / "crop_a.png", np.full((32, 32, 3), 90, np.uint8))
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["attributes", "extract", str(tmp_path / "crop_a.png"), str(tmp_path / "sub"),
                                      "--model", str(random_checkpoint), "--out", str(out), "--aligned"])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert len({r["id"] for r in rows}) == 2  # colliding stems are kept apart
    # The same grey picture at two sizes, gray and RGB, must give the same estimate.
    assert float(rows[0]["yaw"]) == pytest.approx(float(rows[1]["yaw"]), abs=1e-3)


def test_extract_cli_errors_are_clear(tmp_path: Path, random_checkpoint: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["attributes", "extract", str(tmp_path / "missing.png"), "--model",
                                 str(random_checkpoint), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code != 0 and "no such file" in result.output
    save_png(tmp_path / "a.png", np.zeros((64, 64), np.uint8))
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_bytes(b"junk")
    result = runner.invoke(cli, ["attributes", "extract", str(tmp_path / "a.png"), "--model", str(not_a_model),
                                 "--out", str(tmp_path / "o.csv")])
    assert result.exit_code != 0 and "not a readable torch checkpoint" in result.output
    assert "Traceback" not in result.output


def test_extract_from_a_model_repository_matches_the_checkpoint(tmp_path: Path, random_checkpoint: Path) -> None:
    """The torch-free path (ONNX model repository) gives the torch checkpoint's numbers."""
    pytest.importorskip("export.cli")
    pytest.importorskip("onnxruntime")
    runner = CliRunner()
    repo = tmp_path / "repo"
    exported = runner.invoke(cli, ["export", "recon", "--checkpoint", str(random_checkpoint),
                                   "--repository", str(repo)])
    assert exported.exit_code == 0, exported.output
    save_png(tmp_path / "images" / "astronaut.png", astronaut())
    outputs = {}
    for name, model in (("onnx", repo), ("torch", random_checkpoint)):
        out = tmp_path / f"{name}.csv"
        result = runner.invoke(cli, ["attributes", "extract", str(tmp_path / "images"), "--model", str(model),
                                     "--out", str(out)])
        assert result.exit_code == 0, result.output
        outputs[name] = read_rows(out)[0]
    for column in [*DEFAULT_SCHEMA.names, "confidence"]:
        assert float(outputs["onnx"][column]) == pytest.approx(float(outputs["torch"][column]), abs=2e-3), column
