"""GAN training end to end on a tiny dataset: CLI, data loading, checkpoints, kill-and-resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from surrogate.cli import cli
from surrogate.imageio import save_png
from surrogate.schema import DEFAULT_SCHEMA
from training.gan.checkpoint import CheckpointError, load_checkpoint, load_generator
from training.gan.dataset import DatasetError, load_face_dataset, match_images, split_held_out
from training.gan.ema import averaged_copy, ema_beta, update_ema

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "gan" / "tiny_cpu.toml"


def write_image_folder(root: Path, n: int = 24, size: int = 20) -> Path:
    """Blob 'faces' whose brightness follows AU12, plus a canonical attribute CSV (adapter format)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    values = DEFAULT_SCHEMA.denormalise(rng.random((n, len(DEFAULT_SCHEMA))).astype(np.float32))
    yy, xx = np.mgrid[:size, :size]
    rows = ["id,file," + ",".join(DEFAULT_SCHEMA.names)]
    for i in range(n):
        cx, cy = rng.uniform(6, size - 6, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 20.0)
        image = (40 + 200 * blob * values[i, DEFAULT_SCHEMA.index("AU12")] / 5).astype(np.uint8)
        save_png(root / "images" / f"face{i:03d}.png", image)
        rows.append(f"face{i:03d},images/face{i:03d}.png," + ",".join(f"{v:.4f}" for v in values[i]))
    (root / "attributes.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("gan_data"))


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "gan",
        "--config",
        str(TINY),
        "--data",
        str(data),
        "--attributes",
        str(data / "attributes.csv"),
        "--out",
        str(out),
        *extra,
    ]


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_dry_run_prints_resolved_config_with_overrides() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "gan",
            "--config",
            str(TINY),
            "--dry-run",
            "--steps",
            "7",
            "--set",
            "loss.gamma=0.5",
            "--batch-size",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "steps = 7" in result.output and "gamma = 0.5" in result.output and "batch_size = 4" in result.output
    bad = CliRunner().invoke(cli, ["train", "gan", "--config", str(TINY), "--dry-run", "--set", "loss.gama=1"])
    assert bad.exit_code != 0 and "loss.gama" in bad.output and "Traceback" not in bad.output


def test_training_cli_writes_checkpoints_samples_and_metrics(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(image_folder, out, "--steps", "10"))
    assert result.exit_code == 0, result.output
    for name in (
        "last.pt",
        "best.pt",
        "metrics.csv",
        "config.toml",
        "samples/real.png",
        "samples/probe_0000010.png",
        "samples/sweep_0000010.png",
    ):
        assert (out / name).is_file(), name
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert all(0.0 <= float(r["k_t"]) <= 1.0 for r in rows)
    assert rows[-1]["diversity"] != ""
    generator, schema, config = load_generator(out / "last.pt")
    assert schema == DEFAULT_SCHEMA and config["step"] == 10 and not generator.training
    image = generator(torch.zeros(2, 64), torch.full((2, 10), 0.5))
    assert image.shape == (2, 1, 16, 16)


def test_snapshots_are_weights_only_generators_that_match_the_run(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(image_folder, out, "--steps", "10", "--set", "train.snapshot_every=4"))
    assert result.exit_code == 0, result.output
    snapshots = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snapshots == ["generator-0000004.pt", "generator-0000008.pt", "generator-0000010.pt"]  # + the last
    payload = load_checkpoint(out / "snapshots" / "generator-0000008.pt")
    assert "discriminator" not in payload and "opt_g" not in payload and payload["step"] == 8
    assert (out / "snapshots" / "generator-0000008.pt").stat().st_size < (out / "last.pt").stat().st_size / 2
    generator, _, config = load_generator(out / "snapshots" / "generator-0000008.pt")
    assert config["step"] == 8
    z, y = torch.zeros(2, 64), torch.full((2, 10), 0.5)
    last, _, _ = load_generator(out / "last.pt")
    assert not torch.equal(generator(z, y), last(z, y))  # step 8, not step 10
    bad = CliRunner().invoke(cli, train_args(image_folder, out, "--set", "train.snapshot_every=-1", "--dry-run"))
    assert bad.exit_code != 0 and "train.snapshot_every" in bad.output
    other_run = CliRunner().invoke(cli, train_args(image_folder, out, "--steps", "2"))  # fresh run, same folder
    assert other_run.exit_code != 0 and "snapshots of another run" in other_run.output
    assert "Traceback" not in other_run.output
    snapshot_run = tmp_path / "from_snapshot"  # a snapshot put where a checkpoint belongs: refused by name
    snapshot_run.mkdir()
    (snapshot_run / "last.pt").write_bytes((out / "snapshots" / "generator-0000008.pt").read_bytes())
    refused = CliRunner().invoke(cli, train_args(image_folder, snapshot_run, "--steps", "12", "--resume"))
    assert refused.exit_code != 0 and "a generator snapshot, not a training checkpoint" in refused.output
    assert "Traceback" not in refused.output


def test_ema_decay_halves_per_half_life_and_ramps_up() -> None:
    assert ema_beta(16, 10**9, 10.0, 0.05) ** (10_000 / 16) == pytest.approx(0.5)
    assert ema_beta(16, 160, 10.0, 0.05) == pytest.approx(0.25)  # rampup: half-life 8 images = half a batch
    assert ema_beta(16, 10**9, 10.0, 0.0) == ema_beta(16, 10**9, 10.0, 0.05)
    assert ema_beta(16, 0, 10.0, 0.05) == 0.0  # first step: the average is the generator
    model = torch.nn.Linear(2, 1)
    average = averaged_copy(model)
    assert not average.training and not any(p.requires_grad for p in average.parameters())
    with torch.no_grad():
        model.weight.fill_(1.0)
        average.weight.fill_(3.0)
    update_ema(average, model, 0.75)
    np.testing.assert_allclose(average.weight.numpy(), 2.5)  # 0.75 * 3 + 0.25 * 1


def test_ema_generator_is_what_snapshots_and_loading_use_and_resumes_exactly(
    image_folder: Path, tmp_path: Path
) -> None:
    ema = ("--set", "train.ema_kimg=0.1", "--set", "train.snapshot_every=5")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(image_folder, out, "--steps", "10", *ema))
    assert result.exit_code == 0, result.output
    last = load_checkpoint(out / "last.pt")
    raw, average = last["generator"], last["generator_ema"]
    assert any(not torch.equal(raw[k], average[k]) for k in raw)
    snapshot = load_checkpoint(out / "snapshots" / "generator-0000010.pt")
    assert snapshot["weights"] == "ema" and "generator_ema" not in snapshot
    assert all(torch.equal(snapshot["generator"][k], average[k]) for k in average)
    generator, _, info = load_generator(out / "last.pt")
    assert info["weights"] == "ema"
    assert all(torch.equal(v, average[k]) for k, v in generator.state_dict().items())
    _, _, plain = load_generator(out / "snapshots" / "generator-0000010.pt")
    assert plain["weights"] == "ema"

    # Resuming continues the average exactly: 5 steps + 5 resumed == 10 straight.
    split = tmp_path / "split"
    first = CliRunner().invoke(cli, train_args(image_folder, split, "--steps", "5", *ema))
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(cli, train_args(image_folder, split, "--steps", "10", "--resume", *ema))
    assert second.exit_code == 0, second.output
    resumed = load_checkpoint(split / "last.pt")["generator_ema"]
    assert all(torch.equal(resumed[key], value) for key, value in average.items())

    # The update itself, with a known decay: average_2 = beta * average_1 + (1 - beta) * generator_2.
    known = tmp_path / "known"
    two = (
        "--steps",
        "2",
        "--set",
        "train.ema_kimg=0.1",
        "--set",
        "train.ema_rampup=0",
        "--set",
        "train.snapshot_every=1",
    )
    assert CliRunner().invoke(cli, train_args(image_folder, known, *two)).exit_code == 0
    beta = 0.5 ** (8 / 100)  # tiny_cpu.toml: batch 8; half-life 100 images
    first = load_checkpoint(known / "snapshots" / "generator-0000001.pt")["generator"]
    second = load_checkpoint(known / "last.pt")
    for key, value in second["generator_ema"].items():
        expected = beta * first[key] + (1 - beta) * second["generator"][key]
        torch.testing.assert_close(value, expected, msg=key)
        assert not torch.equal(value, second["generator"][key]) or value.abs().max() == 0

    # A run without an average gains one on resume, starting from its generator.
    old = tmp_path / "old"
    assert CliRunner().invoke(cli, train_args(image_folder, old, "--steps", "4")).exit_code == 0
    assert "generator_ema" not in load_checkpoint(old / "last.pt")
    _, _, info = load_generator(old / "last.pt")
    assert info["weights"] == "raw"
    gained = CliRunner().invoke(cli, train_args(image_folder, old, "--steps", "6", "--resume", *ema))
    assert gained.exit_code == 0, gained.output
    assert "starts from its generator" in gained.output
    assert "generator_ema" in load_checkpoint(old / "last.pt")


def test_gan_average_means_the_snapshot_weights_of_a_step_range(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    trained = CliRunner().invoke(cli, train_args(image_folder, out, "--steps", "6", "--set", "train.snapshot_every=2"))
    assert trained.exit_code == 0, trained.output
    averaged = tmp_path / "avg" / "generator-0000006.pt"
    result = CliRunner().invoke(cli, ["train", "gan-average", str(out), "--from-step", "4", "--out", str(averaged)])
    assert result.exit_code == 0, result.output
    four, six = (load_checkpoint(out / "snapshots" / f"generator-000000{s}.pt")["generator"] for s in (4, 6))
    generator, _, info = load_generator(averaged)
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(value, (four[key] + six[key]) / 2, msg=key)
    assert info["step"] == 6 and info["weights"] == "average of 2 snapshots, steps 4, 6"

    one = CliRunner().invoke(cli, ["train", "gan-average", str(out), "--from-step", "6", "--out", str(averaged)])
    assert one.exit_code != 0 and "at least two" in one.output and "Traceback" not in one.output
    other = tmp_path / "other"
    wider = ("--steps", "2", "--set", "train.snapshot_every=2", "--set", "model.n=12")
    assert CliRunner().invoke(cli, train_args(image_folder, other, *wider)).exit_code == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "generator-0000002.pt").write_bytes((other / "snapshots" / "generator-0000002.pt").read_bytes())
    (mixed / "generator-0000004.pt").write_bytes((out / "snapshots" / "generator-0000004.pt").read_bytes())
    refused = CliRunner().invoke(cli, ["train", "gan-average", str(mixed), "--out", str(tmp_path / "x.pt")])
    assert refused.exit_code != 0 and "generator-0000004.pt: model config differs" in refused.output


def test_gan_average_notes_what_it_mixes() -> None:
    from training.gan.ema import mixing_notes

    def payload(weights: str, data: str) -> dict:
        return {"weights": weights, "config": {"data": {"path": data}, "train": {"seed": 0}}}

    assert mixing_notes([("a", payload("ema", "d1")), ("b", payload("ema", "d1"))]) == []
    notes = mixing_notes([("a", payload("raw", "d1")), ("b", payload("ema", "d2"))])
    assert any("ema, raw" in n for n in notes) and any("data.path (d1, d2)" in n for n in notes)


def test_checkpoint_config_with_keys_of_a_newer_version_still_loads() -> None:
    from training.gan.config import GanConfig, config_from_dict

    stored = GanConfig().to_dict()
    stored["train"]["a_future_knob"] = 3
    stored["a_future_section"] = {"x": 1}
    assert config_from_dict(stored) == GanConfig()


def test_same_seed_gives_identical_training(image_folder: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = CliRunner().invoke(cli, train_args(image_folder, tmp_path / name, "--steps", "4"))
        assert result.exit_code == 0, result.output
    a, b = read_metrics(tmp_path / "a" / "metrics.csv"), read_metrics(tmp_path / "b" / "metrics.csv")
    assert [r["loss_d"] for r in a] == [r["loss_d"] for r in b]


def test_killed_run_resumes_exactly(image_folder: Path, tmp_path: Path) -> None:
    """SIGKILL mid-run: last.pt is intact, at most one interval is lost, and the resumed run matches an
    uninterrupted one step for step (k_t, optimiser state and RNG all continued)."""
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "surrogate.cli", *train_args(image_folder, killed, "--steps", "1000000")]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if (killed / "last.pt").is_file() and load_checkpoint(killed / "last.pt")["step"] >= 10:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.05)
        else:
            pytest.fail("training never reached step 10")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    checkpoint = load_checkpoint(killed / "last.pt")  # never torn: atomic writes
    saved_step = checkpoint["step"]
    logged_step = int(read_metrics(killed / "metrics.csv")[-1]["step"])
    assert 0 <= logged_step - saved_step < 5  # checkpoint_every = 5: at most one interval lost

    target = str(saved_step + 3)
    resumed = CliRunner().invoke(cli, train_args(image_folder, killed, "--steps", target, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output
    reference = CliRunner().invoke(cli, train_args(image_folder, tmp_path / "ref", "--steps", target))
    assert reference.exit_code == 0, reference.output
    got, want = read_metrics(killed / "metrics.csv"), read_metrics(tmp_path / "ref" / "metrics.csv")
    assert [int(r["step"]) for r in got] == list(range(1, int(target) + 1))  # no duplicated steps
    for key in ("loss_d", "loss_g", "k_t", "label_real", "constraint"):
        np.testing.assert_allclose(
            [float(r[key]) for r in got[-4:]], [float(r[key]) for r in want[-4:]], rtol=1e-5, err_msg=key
        )


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(image_folder: Path, tmp_path: Path) -> None:
    """A Kubernetes eviction sends SIGTERM: the run writes its checkpoint and snapshot at the step it
    reached (nothing lost, unlike SIGKILL), says how to continue and exits 143 so a Job retries."""
    out = tmp_path / "run"
    args = train_args(image_folder, out, "--steps", "1000000", "--set", "train.snapshot_every=1000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "surrogate.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    try:
        while not (out / "last.pt").is_file() or load_checkpoint(out / "last.pt")["step"] < 10:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr.decode()
    assert "stopped by SIGTERM" in stderr.decode() and "Traceback" not in stderr.decode()
    step = load_checkpoint(out / "last.pt")["step"]
    assert step == int(read_metrics(out / "metrics.csv")[-1]["step"])  # the last logged step is saved
    assert (out / "snapshots" / f"generator-{step:07d}.pt").is_file()


def test_bad_and_missing_images_are_reported_by_name_and_skipped(image_folder: Path, tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "d", n=6)
    (data / "images" / "face001.png").write_bytes(b"not a png")
    (data / "images" / "face002.png").unlink()
    dataset = load_face_dataset(data, attributes=data / "attributes.csv", size=16)
    assert len(dataset) == 4 and dataset.images.shape == (4, 1, 16, 16)
    joined = "\n".join(dataset.skipped)
    assert "face001" in joined and "face002" in joined
    result = CliRunner().invoke(cli, train_args(data, tmp_path / "r", "--steps", "1"))
    assert result.exit_code == 0 and "face001" in result.output
    with pytest.raises(DatasetError, match="does not exist"):
        load_face_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="attribute file"):
        load_face_dataset(data / "images")


def test_openface_frames_and_stems_match_image_files(tmp_path: Path) -> None:
    for name in ("frame_det_00_000001.bmp", "frame_det_00_000002.bmp", "subject7.png"):
        (tmp_path / name).write_bytes(b"x")
    found = match_images(tmp_path, ["1", "2", "subject7", "9"], [None, None, None, None], tmp_path)
    assert [p.name if p else None for p in found] == [
        "frame_det_00_000001.bmp",
        "frame_det_00_000002.bmp",
        "subject7.png",
        None,
    ]


def test_held_out_split_is_by_identity_and_deterministic() -> None:
    identities = np.repeat(np.arange(10), 3)
    train, held = split_held_out(identities, 0.2, seed=1)
    assert len(set(identities[train]) & set(identities[held])) == 0 and len(set(identities[held])) == 2
    np.testing.assert_array_equal(held, split_held_out(identities, 0.2, seed=1)[1])


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="x.pt"):
        load_generator(tmp_path / "x.pt")


def test_synthetic_dataset_layout_loads(tmp_path: Path) -> None:
    pytest.importorskip("surrogate.training_data")
    data = tmp_path / "synth"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    values = DEFAULT_SCHEMA.denormalise(rng.random((4, 10)).astype(np.float32))
    (data / "schema.json").write_text(DEFAULT_SCHEMA.to_json())
    rows = ["id,file,identity," + ",".join(DEFAULT_SCHEMA.names)]
    for i in range(4):
        save_png(data / "images" / f"{i}.png", rng.integers(0, 255, (32, 32), dtype=np.uint8))
        rows.append(f"{i},images/{i}.png,{i // 2}," + ",".join(f"{v:.4f}" for v in values[i]))
    (data / "attributes.csv").write_text("\n".join(rows) + "\n")
    dataset = load_face_dataset(data, size=16)
    assert dataset.images.shape == (4, 1, 16, 16)
    np.testing.assert_array_equal(dataset.identities, [0, 0, 1, 1])


def test_gaussian_blur_keeps_shape_and_mean_and_removes_stripes() -> None:
    from training.imageops import gaussian_blur

    stripes = torch.zeros(2, 1, 16, 16)
    stripes[..., ::2] = 1.0  # period-2 pattern: what an adversarial generator paints
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(2, 1, 16, 16)  # a broad shape survives
    for image, kept in ((stripes, 0.05), (ramp, 0.8)):
        blurred = gaussian_blur(image, 1.5)
        assert blurred.shape == image.shape
        assert float(blurred.mean()) == pytest.approx(float(image.mean()), abs=0.02)
        ratio = float(blurred[..., 4:-4].std() / image[..., 4:-4].std())
        assert (ratio < kept) if image is stripes else (ratio > kept), ratio


def test_label_blur_reads_labels_from_blurred_images(image_folder: Path, tmp_path: Path) -> None:
    from training.gan.loop import GanTrainer

    result = CliRunner().invoke(
        cli, train_args(image_folder, tmp_path / "blur", "--steps", "3", "--set", "loss.label_blur=1.5")
    )
    assert result.exit_code == 0, result.output
    rows = read_metrics(tmp_path / "blur" / "metrics.csv")
    assert len(rows) == 3 and all(np.isfinite(float(r["label_real"])) for r in rows)
    bad = CliRunner().invoke(
        cli, train_args(image_folder, tmp_path / "bad", "--steps", "1", "--set", "loss.label_blur=-1")
    )
    assert bad.exit_code != 0 and "loss.label_blur" in bad.output and "Traceback" not in bad.output

    from training.gan.config import load_config
    from training.imageops import gaussian_blur

    config = load_config(TINY, {"loss.label_blur": 1.5, "train.out_dir": str(tmp_path / "t")})
    dataset = load_face_dataset(
        image_folder,
        attributes=str(image_folder / "attributes.csv"),
        size=config.model.image_size,
        channels=config.model.channels,
    )
    trainer = GanTrainer(config, dataset, tmp_path / "t")
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    d = trainer.discriminator
    with torch.no_grad():
        assert torch.allclose(trainer.label_view(x, d(x).labels), d.aux(d.encoder(gaussian_blur(x, 1.5))))
        plain = load_config(TINY, {"train.out_dir": str(tmp_path / "p")})
        trainer_plain = GanTrainer(plain, dataset, tmp_path / "p")
        labels = trainer_plain.discriminator(x).labels
        assert trainer_plain.label_view(x, labels) is labels


def test_mode_seeking_pairs_the_fakes_and_spreads_them(image_folder: Path, tmp_path: Path) -> None:
    """loss.mode_seeking: the fakes' second half repeats the first half's attributes, the term is logged,
    and 60 steps with a large weight make the generator's output move more with z than without."""
    from training.gan.config import load_config
    from training.gan.loop import GanTrainer

    dataset = load_face_dataset(image_folder, attributes=str(image_folder / "attributes.csv"), size=16, channels=1)

    steps = 60

    def z_spread(weight: float) -> tuple[float, GanTrainer]:
        config = load_config(TINY, {"loss.mode_seeking": weight, "train.out_dir": str(tmp_path / f"w{weight}")})
        trainer = GanTrainer(config, dataset, tmp_path / f"w{weight}", progress=False)
        seen: list[torch.Tensor] = []
        hook = trainer.generator.register_forward_hook(lambda m, args, out: seen.append(args[1].detach().clone()))
        import training.gan.loop as loop_module

        label_targets: list[torch.Tensor] = []
        original = loop_module.label_loss
        loop_module.label_loss = lambda y, *rest: label_targets.append(y.clone()) or original(y, *rest)
        try:
            trainer.train_step()
        finally:
            loop_module.label_loss = original
            hook.remove()
        if weight:  # the fakes, and the label loss on them (the second call), use the paired attributes
            half = config.optim.batch_size // 2
            assert torch.equal(seen[0][:half], seen[0][half:])
            assert torch.equal(label_targets[1], seen[0]) and not torch.equal(label_targets[0], seen[0])
        for _ in range(steps):
            losses = trainer.train_step()
        assert (float(losses.mode_seeking) > 0) == (weight > 0)
        y = trainer.labels[:1].repeat(16, 1)
        z = torch.rand(16, config.model.z_dim, generator=torch.Generator().manual_seed(5)) * 2 - 1
        with torch.no_grad():
            out = trainer.generator(z, y)
            out = out - out.mean(dim=(1, 2, 3), keepdim=True)  # a brightness change is not what the term buys
        return float((out[:8] - out[8:]).abs().mean()), trainer

    plain, _ = z_spread(0.0)
    seeking, trainer = z_spread(1.0)
    assert seeking > 2 * plain, (seeking, plain)  # 0.039 vs 0.014 here, mean-removed
    result = trainer.run(steps + 4)
    assert "mode_seeking" in result.last_metrics and result.last_metrics["mode_seeking"] > 0


def test_label_boost_weights_the_generators_label_loss_only(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """loss.label_boost_g: G's label loss weighs the boosted attribute more; D's (the teacher's) is unchanged;
    a name the data does not have is a clear CLI error."""
    import training.gan.loop as loop_module
    from training.gan.config import load_config
    from training.gan.loop import GanTrainer

    dataset = load_face_dataset(image_folder, attributes=str(image_folder / "attributes.csv"), size=16, channels=1)
    config = load_config(TINY, {"loss.label_boost_g": "AU06=3", "train.out_dir": str(tmp_path / "boost")})
    trainer = GanTrainer(config, dataset, tmp_path / "boost", progress=False)
    weights: list[torch.Tensor | None] = []
    original = loop_module.label_loss
    monkeypatch.setattr(loop_module, "label_loss", lambda y, y_hat, w=None: weights.append(w) or original(y, y_hat, w))
    trainer.train_step()
    d_weights, g_weights = weights
    plain = d_weights if d_weights is not None else torch.ones(len(dataset.schema))
    factor = torch.ones(len(dataset.schema))
    factor[dataset.schema.index("AU06")] = 3.0
    assert torch.allclose(g_weights, plain * factor)
    unknown = CliRunner().invoke(
        cli,
        ["train", "gan", "--config", str(TINY), "--data", str(image_folder), "--attributes",
         str(image_folder / "attributes.csv"), "--out", str(tmp_path / "bad"), "--steps", "1",
         "--set", "loss.label_boost_g=AU6=2"],
    )  # fmt: skip
    assert unknown.exit_code != 0 and "loss.label_boost_g" in unknown.output and "AU6" in unknown.output
    assert "Traceback" not in unknown.output


def test_mode_seeking_term_ignores_brightness_and_pixel_noise(image_folder: Path, tmp_path: Path) -> None:
    """L_MS compares blurred, mean-removed images: pairs that differ only in brightness count as identical
    (~1 / eps), a stripe pattern counts far less than a shape, and it runs under the CPU's bf16 autocast."""
    from training.gan.config import load_config
    from training.gan.loop import GanTrainer

    dataset = load_face_dataset(image_folder, attributes=str(image_folder / "attributes.csv"), size=16, channels=1)
    config = load_config(
        TINY,
        {
            "loss.mode_seeking": 0.01,
            "loss.label_blur": 1.5,
            "train.cpu_bf16": True,
            "train.out_dir": str(tmp_path / "t"),
        },
    )
    trainer = GanTrainer(config, dataset, tmp_path / "t", progress=False)
    z = torch.rand(4, config.model.z_dim) * 2 - 1
    base = torch.rand(2, 1, 16, 16) * 0.2
    brighter = torch.cat([base, base + 0.5])
    assert trainer.mode_seeking_term(brighter, z, 2).item() > 1e4
    stripes = torch.zeros(1, 1, 16, 16)
    stripes[..., ::2] = 0.4  # a one-pixel stripe pattern, mean 0.2
    square = torch.zeros(1, 1, 16, 16)
    square[..., 4:12, 4:12] = 0.8  # a shape, mean 0.2 too
    flat = torch.full((1, 1, 16, 16), 0.2)
    striped = trainer.mode_seeking_term(torch.cat([flat, stripes]), z[:2], 1).item()
    shaped = trainer.mode_seeking_term(torch.cat([flat, square]), z[:2], 1).item()
    assert shaped < striped / 3, (shaped, striped)
    losses = trainer.train_step()  # blurred label path + bf16 autocast + the term
    assert torch.isfinite(losses.mode_seeking) and losses.mode_seeking > 0


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "gan").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_gan_config_parses(path: Path) -> None:
    from training.gan.config import load_config

    config = load_config(path)
    assert config.model.image_size in (16, 32, 64, 128) and config.loss.label_blur >= 0


def test_training_warns_once_when_k_t_stays_at_zero(image_folder: Path, tmp_path: Path) -> None:
    """The tiny config keeps the paper's gamma = 0.1, with which k_t drops to 0 within a few steps."""
    args = ["--steps", "12", "--set", "train.log_every=1"]
    warned = CliRunner().invoke(
        cli, train_args(image_folder, tmp_path / "a", *args, "--set", "train.k_zero_warning_steps=3")
    )
    assert warned.exit_code == 0, warned.output
    assert warned.output.count("warning: k_t has been ~0 since step") == 1
    assert "Raise loss.gamma (now 0.1" in warned.output
    quiet = CliRunner().invoke(
        cli, train_args(image_folder, tmp_path / "b", *args, "--set", "train.k_zero_warning_steps=0")
    )
    assert quiet.exit_code == 0 and "warning: k_t" not in quiet.output
