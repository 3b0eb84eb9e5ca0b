"""scripts/train_defaults.sh, the one-call GPU recipe, rehearsed on the CPU with --smoke.

A device session has one try at it, so the rehearsal checks everything it brings back: per-run logs, a tar
of weights-only snapshots that load as generators, and the resumable last.pt in parts that reassemble
into a checkpoint training continues from.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from click.testing import CliRunner

from surrogate.cli import cli
from training.gan.checkpoint import load_checkpoint, load_generator

REPO = Path(__file__).resolve().parents[1]


def test_smoke_run_brings_back_snapshots_and_a_resumable_checkpoint(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "WORK_DIR": str(work),
        "MODELS": "gan",
        "GAN_VARIANTS": "a b:loss.label_weight_g=6",
        "NETS_BUNDLE": "b",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "train_defaults.sh"), str(out), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    # the logs travel inside the tars: the device tool brings back at most 8 files
    # the first run's whole checkpoint (RESUME_BUNDLE), b's networks without the optimisers (NETS_BUNDLE)
    assert set(names) == {"a.tar", "b.tar", "a.last.pt.part00", "b.nets.pt.part00"}

    with tarfile.open(out / "b.tar") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(tmp_path / "b", filter="data")
        else:  # pragma: no cover
            tar.extractall(tmp_path / "b")
    snapshots = sorted((tmp_path / "b" / "snapshots").glob("generator-*.pt"))
    assert [p.name for p in snapshots] == ["generator-0000005.pt", "generator-0000010.pt", "generator-0000012.pt"]
    _, _, config = load_generator(snapshots[-1])
    assert config["step"] == 12 and config["loss"]["label_weight_g"] == 6.0  # the variant's override
    assert (tmp_path / "b" / "metrics.csv").is_file()
    assert "train gan" in (tmp_path / "b" / "train.log").read_text()

    run = tmp_path / "resumed"
    run.mkdir()
    parts = sorted(out.glob("a.last.pt.part*"))
    (run / "last.pt").write_bytes(b"".join(p.read_bytes() for p in parts))
    assert load_checkpoint(run / "last.pt")["step"] == 12
    resumed = CliRunner().invoke(
        cli,
        [
            "train", "gan", "--config", str(REPO / "configs/gan/tiny_cpu.toml"), "--data", str(work / "synth"),
            "--out", str(run), "--steps", "14", "--resume",
        ],
    )
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output and load_checkpoint(run / "last.pt")["step"] == 14

    # b's networks-only bundle: a third of the size, resumes with fresh Adam moments
    nets_run = tmp_path / "nets"
    nets_run.mkdir()
    (nets_run / "last.pt").write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("b.nets.pt.part*"))))
    nets = load_checkpoint(nets_run / "last.pt")
    assert nets["step"] == 12 and "discriminator" in nets and "opt_g" not in nets and "opt_d" not in nets
    assert (nets_run / "last.pt").stat().st_size < 0.6 * (run / "last.pt").stat().st_size
    continued = CliRunner().invoke(
        cli,
        [
            "train", "gan", "--config", str(REPO / "configs/gan/tiny_cpu.toml"), "--data", str(work / "synth"),
            "--out", str(nets_run), "--steps", "14", "--resume", "--set", "loss.label_weight_g=6",
        ],
    )
    assert continued.exit_code == 0, continued.output
    assert "Adam's moments start afresh" in " ".join(continued.output.split())
    assert load_checkpoint(nets_run / "last.pt")["step"] == 14

    # GAN_RESUME: every run of a second call continues that checkpoint (a CPU run carried to the GPU). A
    # stale snapshot in the run folder (a warm machine keeps them) must not come back as this run's, and a
    # branch that fails (its model differs from the checkpoint's) keeps its log in OUT and brings back no tar.
    work2 = tmp_path / "work2"
    (work2 / "c" / "snapshots").mkdir(parents=True)
    (work2 / "c" / "snapshots" / "generator-0000099.pt").write_bytes(b"stale")
    out2 = tmp_path / "out2"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "train_defaults.sh"), str(out2), "--smoke"],
        env={**env, "WORK_DIR": str(work2), "GAN_VARIANTS": "c:loss.mode_seeking=0.5 bad:model.n=4",
             "GAN_RESUME": str(run / "last.pt"), "SMOKE_STEPS": "16", "RESUME_BUNDLE": "", "TAR_MIB": "4"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # one branch failed
    assert sorted(p.name for p in out2.iterdir()) == ["bad.log", "c.tar"]
    assert "model config differs" in (out2 / "bad.log").read_text()
    with tarfile.open(out2 / "c.tar") as tar:
        names = tar.getnames()
        log = tar.extractfile("train.log").read().decode()  # type: ignore[union-attr]
        config = tar.extractfile("config.toml").read().decode()  # type: ignore[union-attr]
    assert "resumed from" in log and "mode_seeking = 0.5" in config
    assert {"snapshots/generator-0000015.pt", "snapshots/generator-0000016.pt"} <= set(names)
    assert "snapshots/generator-0000005.pt" not in names  # continued from step 14, not started again
    assert "snapshots/generator-0000099.pt" not in names  # the stale file was cleared


def test_bad_settings_are_refused_before_any_work(tmp_path: Path) -> None:
    cases = [({"GAN_VARIANTS": v}, "GAN_VARIANTS: run name") for v in ("a a", "recon", "x/y:loss.gamma=0.7")]
    cases += [({"GAN_DEADLINE_S": "570.5"}, "GAN_DEADLINE_S must be whole seconds"),
              ({"GAN_RESUME": str(tmp_path / "missing.pt")}, "GAN_RESUME: no checkpoint")]
    for settings, message in cases:
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "train_defaults.sh"), str(tmp_path / "out"), "--smoke"],
            env={**os.environ, "PYTHON": sys.executable, "WORK_DIR": str(tmp_path / "w"), **settings},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and message in done.stderr, settings
        assert not (tmp_path / "w" / "synth").exists()  # refused before rendering anything


def fake_corpus(corpus: Path, n: int, prefix: str, size: int = 64, channels: int = 1) -> Path:
    """A folder as `surrogate data portraits` writes it: images<size><g|c>/ of noise, a canonical attributes.csv."""
    import numpy as np

    from surrogate.imageio import save_png
    from surrogate.schema import DEFAULT_SCHEMA

    rng = np.random.default_rng(0)
    lines = ["id,file," + ",".join(DEFAULT_SCHEMA.names)]
    for i in range(n):
        name = f"{prefix}{i:06d}"
        crops = f"images{size}{'g' if channels == 1 else 'c'}"
        shape = (size, size) if channels == 1 else (size, size, channels)
        save_png(corpus / crops / f"{name}.png", rng.integers(0, 256, shape, dtype=np.uint8))
        values = DEFAULT_SCHEMA.denormalise(rng.random((1, len(DEFAULT_SCHEMA))))[0]
        lines.append(f"{name},{crops}/{name}.png," + ",".join(f"{v:.3f}" for v in values))
    (corpus / "attributes.csv").write_text("\n".join(lines) + "\n")
    return corpus


def test_smoke_run_on_a_carried_image_folder(tmp_path: Path) -> None:
    """GAN_DATA: train on a corpus folder (as `surrogate data portraits` writes it) instead of renders."""
    corpus = fake_corpus(tmp_path / "corpus", 24, "")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "WORK_DIR": str(tmp_path / "work"), "MODELS": "gan",
           "GAN_DATA": str(corpus), "RESUME_BUNDLE": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "train_defaults.sh"), str(out), "--smoke"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gan.tar"]
    assert "rendering" not in done.stdout
    with tarfile.open(out / "gan.tar") as tar:
        assert "training on 19 images (5 held out)" in tar.extractfile("train.log").read().decode()


def test_portrait_gpu_call_rehearsal(tmp_path: Path) -> None:
    """scripts/gpu_portraits.sh --smoke: the GAN runs, recon and the serving benchmark in one call, <= 8 files."""
    corpus = fake_corpus(tmp_path / "corpus", 40, "p_")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "WORK_DIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_portraits.sh"), str(corpus), str(out), "--smoke"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bench.txt", "g5.tar", "p64.nets.pt.part00", "p64.tar", "paper.tar", "recon.tar"]
    with tarfile.open(out / "recon.tar") as tar:
        members = {Path(m).name for m in tar.getnames()}
    assert {"recon.pt", "recon_eval.json"} <= members and "recon.last.pt" not in members
    assert "| bf16 |" in (out / "bench.txt").read_text()
    with tarfile.open(out / "paper.tar") as tar:
        snapshot = sorted(n for n in tar.getnames() if n.startswith("snapshots/"))[-1]
        (tmp_path / "paper.pt").write_bytes(tar.extractfile(snapshot).read())
    _, _, config = load_generator(tmp_path / "paper.pt")
    assert config["loss"]["gamma"] == 0.1 and config["optim"]["batch_size"] == 16  # the paper's own settings


def test_next_portrait_gpu_call_rehearsal_runs_the_128_colour_model_from_its_own_config(tmp_path: Path) -> None:
    """The next call's recipe (configs/gan/portraits128c.toml header): 64 grey and 128 colour from one folder."""
    corpus = fake_corpus(tmp_path / "corpus", 40, "p_", size=128, channels=3)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "WORK_DIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "RECON": "0", "GAN_VARIANTS": "p64 c128:config=configs/gan/portraits128c.toml", "NETS_BUNDLE": "all"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_portraits.sh"), str(corpus), str(out), "--smoke"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bench.txt", "c128.nets.pt.part00", "c128.tar", "p64.nets.pt.part00", "p64.tar"]
    with tarfile.open(out / "c128.tar") as tar:
        snapshot = sorted(n for n in tar.getnames() if n.startswith("snapshots/"))[-1]
        (tmp_path / "c128.pt").write_bytes(tar.extractfile(snapshot).read())
    _, _, config = load_generator(tmp_path / "c128.pt")
    assert config["model"]["image_size"] == 128 and config["model"]["channels"] == 3
    bad = subprocess.run(["bash", str(REPO / "scripts" / "gpu_portraits.sh"), str(corpus), str(tmp_path / "o2"),
                          "--smoke"], env={**env, "GAN_VARIANTS": f"c:config={tmp_path / 'missing.toml'}"},
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and f"no config at {tmp_path / 'missing.toml'}" in bad.stderr
