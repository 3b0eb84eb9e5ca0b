"""The model runtime (``surrogate.runtime``): one generator run, one output conversion, one seed rule,
pluggable backends, and a core that imports nothing above it."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from surrogate import runtime
from surrogate.imageio import safe_file_stem
from surrogate.model_repo import TensorSpec
from surrogate.noise import z_batch
from surrogate.schema import DEFAULT_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
UPPER = ("service", "training", "export", "audit", "annotation")


def upward_imports(package: str, forbidden: tuple[str, ...]) -> set[tuple[str, str]]:
    """(file, module) of every import statement, lazy ones included, from ``package`` into ``forbidden``."""
    found = set()
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            found |= {(path.relative_to(ROOT).as_posix(), m) for m in modules if m.split(".")[0] in forbidden}
    return found


def test_the_core_imports_nothing_above_it() -> None:
    assert upward_imports("surrogate", UPPER) == set()


def test_torch_checkpoints_are_read_through_the_registered_loader() -> None:
    """The core finds training's checkpoint reader by its entry point, not by importing training/."""
    from surrogate.extract import checkpoint_loader
    from training.recon.estimator import load_estimator

    assert checkpoint_loader() is load_estimator


def test_the_service_and_training_import_only_the_core() -> None:
    assert upward_imports("service", ("training", "export", "audit", "annotation")) == set()
    assert upward_imports("training", ("service", "export", "audit", "annotation")) == set()


def test_every_core_module_imports_with_the_upper_packages_absent() -> None:
    script = f"""
import importlib, pkgutil, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {UPPER!r} + ("torch",):
            raise ImportError("absent: " + name)
sys.meta_path.insert(0, Absent())
import surrogate
for module in pkgutil.iter_modules(surrogate.__path__):
    importlib.import_module("surrogate." + module.name)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@dataclass
class RecordingBackend:
    """A Backend whose image is its z and attributes, so every call can be checked (z width 5)."""

    z_dim: int = 5
    calls: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    kind: str = "recording"
    recon: runtime.ModelInfo | None = None

    @property
    def gan(self) -> runtime.ModelInfo:
        inputs = (TensorSpec("attributes", np.dtype(np.float32), (-1, len(DEFAULT_SCHEMA))),
                  TensorSpec("z", np.dtype(np.float32), (-1, self.z_dim)))
        outputs = (TensorSpec("image", np.dtype(np.uint8), (-1, 1, 1, len(DEFAULT_SCHEMA) + self.z_dim)),)
        return runtime.ModelInfo("recording", 1, DEFAULT_SCHEMA, inputs, outputs)

    def generate(self, attributes: np.ndarray, z: np.ndarray) -> np.ndarray:
        self.calls.append((attributes, z))
        row = np.concatenate([attributes, (z + 1) * 100], axis=1)
        return np.round(row).astype(np.uint8)[:, None, None, :]

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        raise runtime.BackendError("no reconstruction")

    def close(self) -> None: ...


@pytest.fixture
def registered() -> Iterator[None]:
    runtime.register_backend("recording", RecordingBackend)
    try:
        yield
    finally:
        runtime.BACKENDS.pop("recording")


def test_a_registered_backend_gets_its_own_z_width_in_chunks(registered: None) -> None:
    backend = runtime.open_backend("recording", z_dim=7)
    values = DEFAULT_SCHEMA.validate_records([{n: DEFAULT_SCHEMA.spec(n).low for n in DEFAULT_SCHEMA.names}] * 5)
    images = runtime.generate_images(backend, values, [3, 4, 5, 6, 7], batch_size=2)
    assert [len(a) for a, _ in backend.calls] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([z for _, z in backend.calls]), z_batch([3, 4, 5, 6, 7], 7))
    assert images.shape == (5, 1, len(DEFAULT_SCHEMA) + 7)  # one channel: (N, H, W)


def test_model_facts_survive_the_trip_to_the_service_front_end_with_their_z_law() -> None:
    info = RecordingBackend(z_dim=3).gan
    other_law = runtime.ModelInfo(info.name, 2, info.schema, info.inputs, info.outputs, noise="normal")
    back = runtime.ModelInfo.from_dict(other_law.to_dict())
    assert (back.name, back.version, back.z_dim, back.noise, back.inputs) == ("recording", 2, 3, "normal", info.inputs)
    assert back.schema.names == info.schema.names


def test_unknown_backends_and_bad_values_are_refused(registered: None) -> None:
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        runtime.open_backend("nope")
    with pytest.raises(ValueError, match="2 attribute rows but 1 seeds"):
        runtime.generate_images(RecordingBackend(), np.tile(DEFAULT_SCHEMA.lows, (2, 1)), [1])
    with pytest.raises(ValueError, match="outside the valid range"):
        runtime.generate_images(RecordingBackend(), (DEFAULT_SCHEMA.highs + 1)[None], [1])


def test_to_hwc_keeps_colour_and_drops_a_single_channel() -> None:
    nchw = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    assert runtime.to_hwc(nchw).shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(runtime.to_hwc(nchw)[1, 2, 3], nchw[1, :, 2, 3])
    assert runtime.to_hwc(nchw[:, :1]).shape == (2, 4, 5)


def test_embedded_backend_reads_z_width_from_the_model(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from service.demo_models import write_demo_repository
    from training.gan.evaluate import OnnxSource

    repo = write_demo_repository(tmp_path / "repo", size=8, z_dim=12)
    backend = runtime.OnnxRuntimeBackend(repo, recon_model=None)
    assert backend.gan is not None and backend.gan.z_dim == 12 and backend.recon is None
    values = np.tile(DEFAULT_SCHEMA.lows, (3, 1))
    images = runtime.generate_images(backend, values, [1, 2, 3], batch_size=2)
    np.testing.assert_array_equal(images, runtime.to_hwc(backend.generate(values, z_batch([1, 2, 3], 12))))
    assert OnnxSource(repo).z_dim == 12  # the GAN evaluation once assumed 64


def test_seed_rule_is_record_major_and_row_seed_agrees() -> None:
    seeds = runtime.record_seeds(100, 3, 2)
    assert seeds == [100, 101, 102, 103, 104, 105]
    assert [runtime.row_seed(100, r, k, 2) for r in range(3) for k in range(2)] == seeds


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a/b", "a_b"), ("../etc/passwd", "_etc_passwd"), ("..", "row"), ("", "row"), ("x y.png", "x_y.png"),
     ("é-1", "é-1")],
)
def test_safe_file_stem(name: str, expected: str) -> None:
    assert safe_file_stem(name) == expected


def test_safe_file_stem_limits_length_and_takes_a_fallback() -> None:
    assert safe_file_stem("a" * 300, max_length=120) == "a" * 120
    assert safe_file_stem("...", fallback="row7") == "row7"
