"""Comments, docstrings and docs name only files that exist (a config once pointed at a file that did not)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP = "configs|docs|scripts|tests|benchmarks|k8s|docker|surrogate|service|export|training|audit|annotation"
REFERENCE = re.compile(rf"\b(?:{TOP})/[A-Za-z0-9_./-]+\.(?:py|toml|md|sh|yaml|json|png|csv)\b")
SCANNED = {".py", ".toml", ".md", ".sh", ".yaml"}


def test_every_named_project_file_exists() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the project's files")
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    missing = []
    for name in names:
        path = ROOT / name
        if path.suffix not in SCANNED or not path.is_file():
            continue
        # A reference is relative to the project root or to a folder above the file (docs/, k8s/jobs/x/).
        bases = [folder for folder in path.parents if folder == ROOT or ROOT in folder.parents]
        for reference in sorted(set(REFERENCE.findall(path.read_text(encoding="utf-8", errors="replace")))):
            if not any((base / reference).exists() for base in bases):
                missing.append(f"{name}: {reference}")
    assert missing == []
