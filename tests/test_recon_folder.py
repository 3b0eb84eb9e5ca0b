"""The reconstruction network's folder mode (issue 18, item 7): a labelled image folder (the portrait corpus's
format: images + canonical attributes.csv) trained, evaluated on its held-out rows and exported.

The fixture corpus is written here (16 small PNGs): no portrait generator or MediaPipe is needed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from surrogate.cli import cli
from surrogate.imageio import save_png
from surrogate.schema import DEFAULT_SCHEMA

torch = pytest.importorskip("torch")

from training.gan.dataset import split_by_row_id  # noqa: E402
from training.recon.config import ConfigError, config_from_dict, load_config  # noqa: E402
from training.recon.evaluate import attribute_metrics, portrait_targets  # noqa: E402
from training.recon.folder import FolderSource, load_folder_split  # noqa: E402
from training.recon.loop import compute_loss, group_indices  # noqa: E402
from training.recon.networks import ReconNet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "recon" / "tiny_portraits.toml"
PORTRAITS = ROOT / "configs" / "recon" / "portraits.toml"
HEADER = ["id", "file", *DEFAULT_SCHEMA.names]


def write_corpus(folder: Path, n: int = 16, size: int = 40) -> np.ndarray:
    """A corpus in the portrait format: images64g/NNNNNN.png (left-right asymmetric) + attributes.csv."""
    rng = np.random.default_rng(3)
    (folder / "images64g").mkdir(parents=True)
    values = np.column_stack([rng.uniform(-30, 30, (n, 3)), rng.uniform(0, 5, (n, 6)), rng.uniform(0, 1, n)])
    with (folder / "attributes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(n):
            image = np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))  # dark left, bright right
            image[: size // 4, : size // 4] = rng.integers(0, 256)
            save_png(folder / "images64g" / f"{i:06d}.png", image)
            writer.writerow([f"{i:06d}", f"images64g/{i:06d}.png", *(f"{v:.4f}" for v in values[i])])
    return values


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder)
    return folder


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recon_folder") / "run"
    result = CliRunner().invoke(cli, ["train", "recon", "--config", str(TINY), "--data", str(corpus),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_folder_mode_trains_and_records_its_command(trained: Path) -> None:
    rows = list(csv.DictReader((trained / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert rows[-1]["eval_pose_mae_deg"] != "" and rows[-1]["eval_gender_auc"] != ""
    # no identity / lighting loss on real rows: the columns stay empty, not 0
    assert rows[-1]["loss_identity"] == "" and rows[-1]["loss_lighting"] == ""
    state = torch.load(trained / "last.pt", weights_only=False)
    assert state["config"]["data"]["mode"] == "folder"
    assert state["command"].startswith("surrogate train recon --config")


def test_evaluate_reports_the_held_out_rows_against_the_targets(trained: Path, corpus: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "recon", "--checkpoint", str(trained / "model.pt"),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["sets"]) == ["held_out"]
    config = load_config(TINY).with_overrides(data_path=str(corpus))
    _, held = load_folder_split(config)
    summary = metrics["summary"]
    assert summary["n"] == len(held) > 0
    assert {"yaw_mae_deg", "pitch_mae_deg", "roll_mae_deg", "AU04_r", "AU12_r", "gender_auc"} <= set(summary)
    assert set(summary["targets_met"]) == {
        "yaw MAE <= 3", "pitch MAE <= 3", "roll MAE <= 3", "AU04 r >= 0.85", "AU05 r >= 0.7", "AU06 r >= 0.7",
        "AU07 r >= 0.7", "AU12 r >= 0.85", "AU23 r >= 0.7", "gender AUC >= 0.95"}


def test_export_adds_a_version_whose_card_names_data_licence_and_metrics(trained: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    evaluated = runner.invoke(cli, ["evaluate", "recon", "--checkpoint", str(trained / "model.pt"),
                                    "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    repository = tmp_path / "repo"
    (repository / "recon" / "1").mkdir(parents=True)  # an older version: the export is added beside it
    result = runner.invoke(cli, ["export", "recon", "--checkpoint", str(trained / "model.pt"), "--repository",
                                 str(repository), "--metrics", str(tmp_path / "eval" / "metrics.json"),
                                 "--exporter", "legacy"])
    assert result.exit_code == 0, result.output
    assert (repository / "recon" / "2" / "model.onnx").is_file()
    card = (repository / "recon" / "MODEL_CARD.md").read_text()
    assert "a tiny labelled test folder (read from" in card and "held_out_fraction=0.25" in card
    assert "pool_size" not in card.split("## Training")[1].split("<details>")[0]  # rendering keys do not apply
    assert "- Steps: 6" in card and "`surrogate train recon --config" in card
    assert "| yaw_mae_deg |" in card and "| gender_auc |" in card
    assert "`identity` and `lighting` outputs are untrained" in card


def test_portraits_config_words_the_card_data_and_licence() -> None:
    from export.cli import _describe_data

    data = load_config(PORTRAITS).to_dict()["data"]
    described = _describe_data({**data, "path": "corpus"})
    for phrase in ("MobileStyleGAN", "random-face", "StyleGAN2-FFHQ", "non-commercial", "MediaPipe FaceLandmarker",
                   "hand-labelled", "landmark_frame"):
        assert phrase in described, phrase
    assert "non-commercial" in data["licence"] and "NVIDIA Source Code License-NC" in data["licence"]


def test_flips_mirror_yaw_and_roll(corpus: Path) -> None:
    config = load_config(TINY).with_overrides(data_path=str(corpus))
    train, _ = load_folder_split(config)
    batch_of = {}
    for p in (0.0, 1.0):
        flipped = replace(config, data=replace(config.data, flip_probability=p),
                          augment=replace(config.augment, scale_jitter=0.0, shift_jitter=0.0))
        batch_of[p] = FolderSource(flipped, train, torch.device("cpu")).next_batch()  # same seed: same rows
    plain, mirrored = batch_of[0.0], batch_of[1.0]
    torch.testing.assert_close(mirrored["images"], plain["images"].flip(-1), atol=1e-3, rtol=0)
    values = DEFAULT_SCHEMA.denormalise(plain["attributes"].numpy())
    mirrored_values = DEFAULT_SCHEMA.denormalise(mirrored["attributes"].numpy())
    for name in DEFAULT_SCHEMA.names:
        i = DEFAULT_SCHEMA.index(name)
        expected = -values[:, i] if name in ("yaw", "roll") else values[:, i]
        np.testing.assert_allclose(mirrored_values[:, i], expected, atol=1e-4, err_msg=name)


def test_crop_jitter_moves_the_pixels_not_the_labels(corpus: Path) -> None:
    config = load_config(TINY).with_overrides(data_path=str(corpus))
    train, _ = load_folder_split(config)
    batch = FolderSource(config, train, torch.device("cpu")).next_batch()
    assert batch["images"].shape == (config.train.batch_size, 1, 32, 32)
    assert batch["images"].dtype == torch.float32 and 0 <= float(batch["images"].min()) <= 255
    assert set(batch) == {"images", "attributes"}  # no identity / lighting targets for real rows


def test_held_out_split_is_deterministic_disjoint_and_stable_as_rows_are_added() -> None:
    ids = [f"{i:06d}" for i in range(2000)]
    train, held = split_by_row_id(ids, 0.1, seed=0)
    again = split_by_row_id(ids, 0.1, seed=0)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(held, again[1])
    assert not set(train) & set(held) and len(train) + len(held) == len(ids)
    assert 150 < len(held) < 250
    # a corpus that grows (and is rewritten in another order) keeps every old row on its side
    grown = [f"{i:06d}" for i in range(3000)][::-1]
    _, held_grown = split_by_row_id(grown, 0.1, seed=0)
    assert {ids[i] for i in held} == {grown[i] for i in held_grown} & set(ids)
    assert set(split_by_row_id(ids, 0.1, seed=1)[1]) != set(held)


def test_masked_heads_get_no_gradient_from_real_rows(corpus: Path) -> None:
    config = load_config(TINY).with_overrides(data_path=str(corpus))
    train, _ = load_folder_split(config)
    batch = FolderSource(config, train, torch.device("cpu")).next_batch()
    net = ReconNet(len(DEFAULT_SCHEMA), 8, image_size=32, width=0.5, head_features=64)
    outputs = net.forward_normalised(batch["images"] / 127.5 - 1.0)
    loss, parts = compute_loss(outputs, batch, group_indices(DEFAULT_SCHEMA), config)
    loss.backward()
    assert set(parts) == {"loss_pose", "loss_aus", "loss_gender"}
    for head in (net.out_identity, net.out_lighting):
        assert head.weight.grad is None and head.bias.grad is None
    assert float(net.out_attributes.weight.grad.abs().sum()) > 0


def test_gender_auc_and_portrait_targets_on_known_values() -> None:
    rng = np.random.default_rng(0)
    true = DEFAULT_SCHEMA.clip(np.column_stack([rng.uniform(-30, 30, (200, 3)), rng.uniform(0, 5, (200, 6)),
                                                rng.uniform(0, 1, 200)]).astype(np.float32))
    metrics = attribute_metrics(DEFAULT_SCHEMA, true, true)
    assert metrics["summary"]["gender_auc"] == pytest.approx(1.0)
    assert all(portrait_targets(metrics).values())
    off = true.copy()
    off[:, DEFAULT_SCHEMA.index("roll")] += 4.0  # one angle off by 4 degrees
    off[:, DEFAULT_SCHEMA.index("gender")] = 1 - off[:, DEFAULT_SCHEMA.index("gender")]  # gender inverted
    met = portrait_targets(attribute_metrics(DEFAULT_SCHEMA, true, off))
    assert not met["roll MAE <= 3"] and met["yaw MAE <= 3"] and not met["gender AUC >= 0.95"]


def test_bad_folder_inputs_are_named(tmp_path: Path) -> None:
    runner = CliRunner()
    no_csv = tmp_path / "no_csv"
    no_csv.mkdir()
    result = runner.invoke(cli, ["train", "recon", "--config", str(TINY), "--data", str(no_csv),
                                 "--out", str(tmp_path / "o1")])
    assert result.exit_code != 0 and "attributes.csv" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["train", "recon", "--config", str(TINY), "--out", str(tmp_path / "o2")])
    assert result.exit_code != 0 and "data.path" in result.output
    with pytest.raises(ConfigError, match="held_out_fraction"):
        config_from_dict({"data": {"mode": "folder", "held_out_fraction": 1.0}})


@pytest.mark.slow
def test_gpu_script_smoke_brings_back_weights_and_the_evaluation(tmp_path: Path) -> None:
    """scripts/gpu_recon_portraits.sh rehearsed on the CPU: a device session has one try at it."""
    import os
    import subprocess
    import sys

    corpus, out = tmp_path / "corpus", tmp_path / "out"
    write_corpus(corpus)
    env = {**os.environ, "PYTHON": sys.executable, "WORK_DIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "RECON_CONFIG": str(TINY)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_recon_portraits.sh"), str(corpus), str(out), "--smoke"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert names == {"recon.pt", "recon.last.pt", "recon_eval.json", "recon_eval.md", "recon_metrics.csv",
                     "recon_samples.png", "recon.log"}
    assert json.loads((out / "recon_eval.json").read_text())["summary"]["targets_met"]
    state = torch.load(out / "recon.pt", weights_only=False)
    assert state["step"] == 4 and "optimiser" not in state
    missing = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_recon_portraits.sh"), str(tmp_path / "work"),
                              str(out), "--smoke"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "attributes.csv" in missing.stderr
