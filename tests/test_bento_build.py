"""`bentoml build` works offline from bentofile.yaml and packs the service without training code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_bentofile_builds_offline_with_tracking_off(tmp_path: Path) -> None:
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert bentofile["python"]["lock_packages"] is False  # no online resolution at build time
    assert {"name": "BENTOML_DO_NOT_TRACK", "value": "true"} in bentofile["envs"]
    assert not any(p.startswith("torch") for p in bentofile["python"]["packages"])

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = Path(sys.executable).with_name("bentoml")
    result = subprocess.run([str(bentoml), "build"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    built = [p for p in (tmp_path / "bentoml" / "bentos" / "surrogate-faces").iterdir() if p.name != "latest"]
    assert len(built) == 1
    src = built[0] / "src"
    assert (src / "service" / "service.py").is_file() and (src / "surrogate" / "schema.py").is_file()
    assert not (src / "training").exists() and not (src / "tests").exists()
    # The ICT-FaceKit face model's data and its licence travel with the service's 3-D path.
    kit = src / "surrogate" / "third_party" / "ict_facekit"
    assert (kit / "ict_face.npz").is_file() and (kit / "LICENSE").is_file()
