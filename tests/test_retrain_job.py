"""The Kubernetes retrain Job's script, run for real on the CPU (DEVICE=cpu, the tiny config).

The Job itself needs a cluster with a GPU node (not available here); its script is plain shell over the
`surrogate` CLI, so it runs here end to end: render data, train with snapshots, evaluate every snapshot
with the repository's reconstruction network, export the best as a new model version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from surrogate.model_repo import ModelRepository

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "k8s" / "jobs" / "retrain" / "scripts" / "retrain.sh"


def run_job(tmp_path: Path, repository: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
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
