"""The Kubernetes retrain Job's script, run for real on the CPU (DEVICE=cpu, the tiny config).

The Job itself needs a cluster with a GPU node (not available here); its script is plain shell over the
`surrogate` CLI, so it runs here end to end: render data, train with snapshots, evaluate every snapshot
with the repository's reconstruction network, export the best as a new model version.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from surrogate.model_repo import ModelRepository

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "k8s" / "jobs" / "retrain" / "scripts" / "retrain.sh"


def job_env(tmp_path: Path, repository: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CONFIG": str(REPO / "configs" / "gan" / "tiny_cpu.toml"),
        "DEVICE": "cpu",
        "STEPS": "4",
        "SNAPSHOT_EVERY": "2",
        "SYNTH_N": "48",
        "SYNTH_DIR": str(tmp_path / "synthetic"),
        "RUN_DIR": str(tmp_path / "run"),
        "REPOSITORY": str(repository),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def run_job(tmp_path: Path, repository: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = job_env(tmp_path, repository, **extra)
    return subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)


def test_retrain_script_exports_the_best_snapshot_as_a_new_version(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    shutil.copytree(REPO / "model_repository" / "recon", repository / "recon")  # the independent estimator

    done = run_job(tmp_path, repository)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "eval" / "snapshots.json").read_text())
    assert set(summary["snapshots"]) == {"2", "4"}
    assert ModelRepository(repository).latest_version("gan_generator") == 1
    card = (repository / "gan_generator" / "MODEL_CARD.md").read_text()
    assert f"generator-{summary['best_step']:07d}.pt" in card  # the chosen snapshot, not last.pt
    assert "retrain: exported step" in done.stdout

    # A retried pod resumes (nothing left to train) and exports the next version; without snapshots
    # (SNAPSHOT_EVERY=0) it exports the last checkpoint.
    again = run_job(tmp_path, repository, SNAPSHOT_EVERY="0")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert ModelRepository(repository).latest_version("gan_generator") == 2
    assert "last.pt" in (repository / "gan_generator" / "MODEL_CARD.md").read_text()


def test_sigterm_to_the_job_shell_reaches_training_which_checkpoints_and_exits_143(tmp_path: Path) -> None:
    """An eviction SIGTERMs the container's shell (PID 1 in the pod): the script forwards it, training
    stops at a step boundary with its checkpoint, nothing is exported and the status is 143 (retried)."""
    from training.gan.checkpoint import load_checkpoint

    repository = tmp_path / "repository"
    repository.mkdir()
    env = job_env(tmp_path, repository, STEPS="1000000", SNAPSHOT_EVERY="1000")
    proc = subprocess.Popen(["sh", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "run" / "last.pt"
    deadline = time.monotonic() + 300
    try:
        while not last.is_file() or load_checkpoint(last)["step"] < 10:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # to the shell only, as the kubelet does to PID 1
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr and "nothing exported" in stderr
    step = load_checkpoint(last)["step"]
    assert (tmp_path / "run" / "snapshots" / f"generator-{step:07d}.pt").is_file()  # written at the stop
    assert not (repository / "gan_generator").exists()
