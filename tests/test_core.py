"""Noise from seeds, atomic image I/O and the CLI shell: the pieces every other part relies on."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from surrogate import noise
from surrogate.cli import cli
from surrogate.imageio import (
    ImageDecodeError,
    atomic_open,
    atomic_write_bytes,
    decode_image,
    encode_png,
    image_grid,
)


def test_z_from_seed_is_deterministic_uniform_and_seed_specific() -> None:
    z1, z2 = noise.z_from_seed(7), noise.z_from_seed(7)
    assert z1.dtype == np.float32 and z1.shape == (noise.Z_DIM,)
    np.testing.assert_array_equal(z1, z2)
    assert np.all((z1 >= -1) & (z1 < 1))
    assert not np.array_equal(z1, noise.z_from_seed(8))
    np.testing.assert_array_equal(noise.z_batch([7, 8])[1], noise.z_from_seed(8))


def test_streams_are_independent_of_each_other() -> None:
    z = noise.z_from_seed(3, 16)
    ident = noise.identity_from_seed(3, 16)
    assert abs(np.corrcoef(z, ident)[0, 1]) < 0.9
    assert not np.allclose(z, ident)


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "3", True, None])
def test_bad_seeds_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        noise.z_from_seed(bad)  # type: ignore[arg-type]


def test_image_seeds_are_consecutive_and_bounded() -> None:
    assert noise.image_seeds(10, 3) == [10, 11, 12]
    with pytest.raises(ValueError, match="exceeds"):
        noise.image_seeds(noise.MAX_SEED, 2)


def test_png_round_trip_gray_and_rgb() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (8, 9), dtype=np.uint8)
    rgb = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_png(gray), grayscale=True), gray)
    np.testing.assert_array_equal(decode_image(encode_png(rgb)), rgb)
    chw = np.transpose(rgb, (2, 0, 1))
    np.testing.assert_array_equal(decode_image(encode_png(chw)), rgb)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n broken"])
def test_decode_refuses_non_images_by_name(data: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="upload.png"):
        decode_image(data, name="upload.png")


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path) -> None:
    target = tmp_path / "model.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_image_grid_shape() -> None:
    tiles = [np.full((4, 5), i * 20, np.uint8) for i in range(5)]
    grid = image_grid(tiles, columns=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1)
    assert grid[1, 1] == 0 and grid[1 + 5, 1] == 60


def test_cli_help_lists_every_command_without_importing_torch() -> None:
    code = (
        "import sys; from surrogate.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'surrogate --help imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("data", "attributes", "train", "evaluate", "synthesize", "annotate"):
        assert name in result.stdout
    assert "unavailable" not in result.stdout, result.stdout


def test_cli_unknown_command_is_a_clean_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_each_command_group_lives_in_one_cli_module() -> None:
    """Every click command is defined in a ``*cli.py`` module, never in a library module, and the lazy
    table sends every subcommand of a group to one module: a reader finds a group's commands in one file."""
    import ast
    from pathlib import Path

    from surrogate.cli import COMMANDS

    root = Path(__file__).resolve().parent.parent
    defining = set()
    for package in ("surrogate", "training", "export", "service", "audit", "annotation"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                decorators = node.decorator_list if isinstance(node, ast.FunctionDef) else []
                if any(isinstance(d, ast.Call) and getattr(d.func, "attr", "") in ("command", "group")
                       for d in decorators):
                    defining.add(path.relative_to(root).as_posix())
    assert "surrogate/data_cli.py" in defining and all(p.endswith("cli.py") for p in defining), sorted(defining)
    for name, entry in COMMANDS.items():
        targets = [t for t, _, _ in entry.values()] if isinstance(entry, dict) else [entry[0]]
        modules = {target.split(":")[0] for target in targets}
        assert len(modules) == 1 and modules.pop().endswith("cli"), (name, targets)


def test_record_seeds_are_record_major_and_bounded() -> None:
    assert noise.record_seeds(100, 2, 3) == [100, 101, 102, 103, 104, 105]
    assert noise.record_seed(100, 1, 3) == 103
    with pytest.raises(ValueError, match="exceeds"):
        noise.record_seed(noise.MAX_SEED - 2, 1, 2)
