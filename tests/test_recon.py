"""The reconstruction network: config, network contract, data, training CLI (dry run, run, resume),
checkpoints, estimator and evaluation. Runs real renders at 32 px so the suite stays fast on 2 cores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from surrogate.cli import cli
from surrogate.schema import DEFAULT_SCHEMA

torch = pytest.importorskip("torch")

from training.recon.checkpoint import CheckpointError, load_reconnet  # noqa: E402
from training.recon.config import ConfigError, ReconConfig, config_from_dict, load_config  # noqa: E402
from training.recon.data import augment_batch, render_chunk, sample_attributes  # noqa: E402
from training.recon.evaluate import attribute_metrics, targets_met  # noqa: E402
from training.recon.networks import ReconNet, count_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "recon" / "tiny_cpu.toml"


def test_shipped_configs_load() -> None:
    default = load_config(ROOT / "configs" / "recon" / "default.toml")
    assert default.schema.names == DEFAULT_SCHEMA.names and default.data.workers > 0
    assert load_config(TINY).model.image_size == 32


@pytest.mark.parametrize(("data", "message"), [
    ({"train": {"stepz": 3}}, "unknown key 'train.stepz'"),
    ({"train": {"steps": "many"}}, "train.steps must be an integer"),
    ({"model": {"channels": 2}}, "model.channels"),
    ({"data": {"mode": "magic"}}, "data.mode"),
    ({"data": {"face_model": "ict2"}}, "data.face_model must be one of parametric, ict"),
    ({"attributes": ["yaw", "AU99"]}, "AU99"),
])
def test_bad_config_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_network_contract_and_size() -> None:
    net = ReconNet(10, 16).eval()
    assert count_parameters(net) < 2_000_000
    with torch.no_grad():
        out = net(torch.randn(3, 1, 64, 64) * 3)
    assert out["attributes"].shape == (3, 10) and out["identity"].shape == (3, 16) and out["lighting"].shape == (3, 4)
    assert float(out["attributes"].min()) >= 0 and float(out["attributes"].max()) <= 1
    assert torch.all(out["lighting"] >= net.lighting_low) and torch.all(out["lighting"] <= net.lighting_high)


def test_attribute_sampling_covers_the_valid_range() -> None:
    config = ReconConfig()
    values = sample_attributes(np.random.default_rng(0), 4000, config.schema, config)
    DEFAULT_SCHEMA.validate_array(values)
    yaw = values[:, 0]
    assert yaw.min() < -55 and yaw.max() > 55
    au12 = values[:, DEFAULT_SCHEMA.index("AU12")]
    assert 0.2 < (au12 == 0).mean() < 0.4 and au12.max() > 4.8


def test_render_chunk_is_deterministic_and_labelled() -> None:
    config = load_config(TINY)
    a = render_chunk(config, np.random.default_rng([1, 2]), 4)
    b = render_chunk(config, np.random.default_rng([1, 2]), 4)
    assert a.images.shape == (4, 1, 32, 32) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_allclose(DEFAULT_SCHEMA.denormalise(a.attributes), a.values, atol=1e-4)
    assert a.lighting.min() >= 0 and a.lighting.max() <= 1


def test_render_chunk_draws_the_configured_face_model() -> None:
    """``data.face_model = "ict"`` draws the same rows (attributes, identity, scene) with the ICT head."""
    from dataclasses import replace

    config = load_config(TINY)
    ict = replace(config, data=replace(config.data, face_model="ict"))
    parametric = render_chunk(config, np.random.default_rng([1, 2]), 3, randomise_scene=False)
    drawn = render_chunk(ict, np.random.default_rng([1, 2]), 3, randomise_scene=False)
    np.testing.assert_array_equal(parametric.values, drawn.values)  # the same labels ...
    assert np.abs(parametric.images.astype(int) - drawn.images).mean() > 5  # ... on another head
    assert load_config(ROOT / "configs" / "recon" / "cpu_ict.toml").data.face_model == "ict"


def test_augmentation_is_seeded_and_in_range() -> None:
    images = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    config = ReconConfig()
    x1 = augment_batch(images, config.augment, torch.Generator().manual_seed(3))
    x2 = augment_batch(images, config.augment, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2) and x1.dtype == torch.float32
    assert float(x1.min()) >= -1 and float(x1.max()) <= 1


def test_metrics_are_right_on_known_values() -> None:
    rng = np.random.default_rng(0)
    true = sample_attributes(rng, 200, DEFAULT_SCHEMA, ReconConfig())
    perfect = attribute_metrics(DEFAULT_SCHEMA, true, true)
    assert perfect["summary"]["pose_mae_deg"] == 0 and perfect["summary"]["au_r_min"] == pytest.approx(1)
    assert perfect["summary"]["gender_accuracy"] == 1 and all(targets_met(perfect["summary"]).values())
    off = true.copy()
    off[:, 0] += 6.0
    shifted = attribute_metrics(DEFAULT_SCHEMA, true, off)
    assert shifted["per_attribute"]["yaw"]["mae"] == pytest.approx(6.0, abs=1e-4)
    assert not targets_met(shifted["summary"])["pose_mae_max_deg <= 3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few steps of the tiny config through the real CLI: the artefacts of a run."""
    out = tmp_path_factory.mktemp("recon") / "run"
    result = CliRunner().invoke(cli, ["train", "recon", "--config", str(TINY), "--out", str(out), "--steps", "20"])
    assert result.exit_code == 0, result.output
    return out


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "dry"
    result = CliRunner().invoke(cli, ["train", "recon", "--config", str(TINY), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '"parameters"' in result.output and not out.exists()


def test_training_writes_checkpoints_metrics_and_samples(trained: Path) -> None:
    for name in ("last.pt", "model.pt", "metrics.csv", "config.json", "schema.json"):
        assert (trained / name).is_file(), name
    assert sorted(p.name for p in (trained / "samples").glob("*.png")) == ["step_0000020.png"]
    rows = list(csv.DictReader((trained / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20] and rows[-1]["eval_pose_mae_deg"] != ""
    net, schema, config = load_reconnet(trained / "model.pt")
    assert not net.training and schema == DEFAULT_SCHEMA and config["image_size"] == 32
    assert (trained / "model.pt").stat().st_size < 30e6


def test_resume_continues_and_refuses_to_overwrite(trained: Path) -> None:
    runner = CliRunner()
    again = runner.invoke(cli, ["train", "recon", "--config", str(TINY), "--out", str(trained), "--steps", "20"])
    assert again.exit_code != 0 and "--resume" in again.output
    resumed = runner.invoke(cli, ["train", "recon", "--config", str(TINY), "--out", str(trained), "--steps", "30",
                                  "--resume"])
    assert resumed.exit_code == 0, resumed.output
    state = torch.load(trained / "last.pt", weights_only=False)
    assert state["step"] == 30 and [h["step"] for h in state["history"]] == [10, 20, 30]


def test_bad_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    torch.save({"something": 1}, junk)
    with pytest.raises(CheckpointError, match="not a reconstruction-network checkpoint"):
        load_reconnet(junk)
    result = CliRunner().invoke(cli, ["evaluate", "recon", "--checkpoint", str(junk), "--out", str(tmp_path / "e")])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_estimator_and_evaluation(trained: Path, tmp_path: Path) -> None:
    from training.recon.estimator import load_estimator

    estimator = load_estimator(trained / "model.pt")
    images = [np.full((50, 50), 128, np.uint8), np.zeros((20, 20, 3), np.uint8)]
    values = estimator.predict(images)
    assert values.shape == (2, 10) and values.dtype == np.float32
    DEFAULT_SCHEMA.validate_array(values)
    result = CliRunner().invoke(cli, ["evaluate", "recon", "--checkpoint", str(trained / "model.pt"), "--n", "16",
                                      "--out", str(tmp_path), "--set", "clean"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["sets"]["clean"]["per_attribute"]) == set(DEFAULT_SCHEMA.names)
    assert (tmp_path / "metrics.md").read_text().startswith("# Reconstruction network evaluation")


def _config_with_init(tmp_path: Path, init_from: Path) -> Path:
    text = TINY.read_text().replace("[train]\n", f'[train]\ninit_from = "{init_from.as_posix()}"\n', 1)
    assert "init_from" in text
    path = tmp_path / "finetune.toml"
    path.write_text(text)
    return path


def test_init_from_loads_an_earlier_runs_weights(trained: Path, tmp_path: Path) -> None:
    from training.recon.checkpoint import build_network, read_checkpoint
    from training.recon.loop import init_weights

    state = read_checkpoint(trained / "model.pt")
    net = build_network(state["config"], int(state["n_identity"]), state["lighting_low"], state["lighting_high"])
    init_weights(net, trained / "model.pt", torch.device("cpu"))
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    wider = dict(state["config"], model=dict(state["config"]["model"], width=1.5))
    other = build_network(wider, int(state["n_identity"]), state["lighting_low"], state["lighting_high"])
    with pytest.raises(RuntimeError, match="different architecture"):
        init_weights(other, trained / "model.pt", torch.device("cpu"))

    config = _config_with_init(tmp_path, trained / "model.pt")
    out = tmp_path / "finetuned"
    result = CliRunner().invoke(cli, ["train", "recon", "--config", str(config), "--out", str(out), "--steps", "10"])
    assert result.exit_code == 0, result.output
    assert "initialised from the weights in" in result.output and (out / "model.pt").is_file()


def test_init_from_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    config = _config_with_init(tmp_path, tmp_path / "nope.pt")
    result = CliRunner().invoke(cli, ["train", "recon", "--config", str(config), "--out", str(tmp_path / "o"),
                                      "--steps", "5"])
    assert result.exit_code != 0 and "train.init_from: no checkpoint at" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "recon").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recon_config_parses_and_checks(path: Path) -> None:
    config = load_config(path)
    config.check()
    if config.train.init_from:  # a fine-tuning stage starts from the previous stage's output
        assert config.train.init_from.endswith("model.pt") and config.train.init_from != f"{config.out_dir}/model.pt"


def test_evaluate_an_exported_model_matches_its_checkpoint(trained: Path, tmp_path: Path) -> None:
    """`evaluate recon` on a model repository (onnxruntime, torch-free estimator) gives the checkpoint's
    figures when told the config that trained it; without --config it says what is missing."""
    pytest.importorskip("onnxruntime")
    runner = CliRunner()
    repo = tmp_path / "repo"
    exported = runner.invoke(cli, ["export", "recon", "--checkpoint", str(trained / "model.pt"),
                                   "--repository", str(repo)])
    assert exported.exit_code == 0, exported.output
    figures = {}
    for name, args in (("torch", ["--checkpoint", str(trained / "model.pt")]),
                       ("onnx", ["--checkpoint", str(repo), "--config", str(TINY)])):
        result = runner.invoke(cli, ["evaluate", "recon", *args, "--n", "24", "--set", "clean",
                                     "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        figures[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert figures["onnx"]["step"] == figures["torch"]["step"] > 0
    torch_clean, onnx_clean = figures["torch"]["sets"]["clean"], figures["onnx"]["sets"]["clean"]
    for attr, m in torch_clean["per_attribute"].items():
        assert onnx_clean["per_attribute"][attr]["mae"] == pytest.approx(m["mae"], rel=1e-2, abs=1e-3), attr
    missing = runner.invoke(cli, ["evaluate", "recon", "--checkpoint", str(repo), "--n", "10",
                                  "--out", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "pass --config" in missing.output and "Traceback" not in missing.output
