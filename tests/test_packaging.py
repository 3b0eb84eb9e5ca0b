"""The installed package carries the data it needs at run time: the wheel (and its ICT-FaceKit data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from surrogate import ict_model as im

ROOT = Path(__file__).resolve().parent.parent
# The packaged folder's files: the data, its licence and the note on what it is.
PACKAGE_DATA = ("ict_face.npz", "LICENSE", "README.md")


def test_ict_data_lives_inside_the_package() -> None:
    """Inside ``surrogate/`` (not beside it in the checkout), so the wheel's package data can carry it."""
    assert im.ICT_DATA_DIR.parent.parent == Path(im.__file__).resolve().parent
    for name in PACKAGE_DATA:
        assert (im.ICT_DATA_DIR / name).is_file(), name


def source_copy(dest: Path) -> Path:
    """What the build reads (pyproject.toml, README.md, the packages it lists), copied, so that building
    leaves no build/ or egg-info in the checkout (a stale build/ could leak old files into a later wheel)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.slow
def test_installed_wheel_finds_the_ict_data_without_the_checkout(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    source = source_copy(tmp_path / "source")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(wheels), str(source)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("surrogate_faces-*.whl")
    members = set(zipfile.ZipFile(wheel).namelist())
    folder = im.ICT_DATA_DIR.relative_to(ROOT).as_posix()
    for name in PACKAGE_DATA:
        assert f"{folder}/{name}" in members, name
    # Unpacked on its own (no checkout on the path, run from elsewhere), the package loads the model.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k != im.ICT_DATA_ENV}
    probe = (f"import sys; sys.path.insert(0, {str(site)!r}); import surrogate.ict_model as im; "
             "m = im.ict_model(); print(im.data_dir(), m.n_vertices)")
    # -I: no PYTHONPATH, no current folder on the path; only the unpacked wheel and the venv's dependencies.
    run = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(str(site)), run.stdout
