"""Batch synthesis: sharding, seeds shared with `surrogate synthesize`, row failures, resume after SIGKILL.

The GAN path runs the real onnxruntime pipeline on the service's demo generator (the exported
model's exact I/O, built without torch), so nothing here needs trained weights.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

from service.demo_models import write_demo_repository  # noqa: E402
from surrogate.batch import (  # noqa: E402
    BatchError,
    Journal,
    Renderer,
    Shard,
    embedded_renderer,
    plan_items,
    run_batch,
)
from surrogate.ict_model import ICT_MODEL_VERSION  # noqa: E402
from surrogate.imageio import load_image  # noqa: E402
from surrogate.runtime import row_seed  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402
from surrogate.synthesis_cli import synthesize_batch_command, synthesize_command  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_repository(tmp_path_factory.mktemp("repo") / "model_repository")


def write_attributes(path: Path, n: int, *, bad_rows: tuple[int, ...] = ()) -> Path:
    """A canonical attribute CSV with ``n`` rows; ``bad_rows`` get an out-of-range yaw."""
    rng = np.random.default_rng(1)
    names = DEFAULT_SCHEMA.names
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *names])
        for i in range(n):
            row = [rng.uniform(s.low, s.high) for s in DEFAULT_SCHEMA.attributes]
            if i in bad_rows:
                row[0] = 500.0
            writer.writerow([f"face{i:05d}", *(f"{v:.4f}" for v in row)])
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def journal_lines(path: Path) -> list[dict]:
    complete = path.read_text().split("\n")[:-1]  # a kill may leave a torn last line: the engine drops it
    return [json.loads(line) for line in complete]


def test_shard_parsing_and_partition() -> None:
    assert Shard.parse("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(BatchError, match="shard"):
            Shard.parse(bad)
    ids = [f"id{i}" for i in range(23)]
    shards = [plan_items(ids, range(23), Shard(i, 4), 7, 2) for i in range(4)]
    every = sorted((item.row, item.k) for shard in shards for item in shard)
    assert every == [(r, k) for r in range(23) for k in range(2)]  # disjoint and complete
    assert all(item.row % 4 == i for i, shard in enumerate(shards) for item in shard)
    assert shards[1][0].seed == row_seed(7, 1, 0, 2)


def test_colliding_file_names_are_disambiguated() -> None:
    items = plan_items(["a/b", "a_b", "c"], [0, 1, 2], Shard(), 0, 1)
    assert len({item.file for item in items}) == 3


@pytest.mark.parametrize("method", ["gan", "3d"])
def test_same_images_as_surrogate_synthesize_and_shards_add_up(tmp_path: Path, repository: Path,
                                                                method: str) -> None:
    attributes = write_attributes(tmp_path / "attrs.csv", 11)
    runner = CliRunner()
    reference = runner.invoke(synthesize_command, [
        "--attributes", str(attributes), "--out", str(tmp_path / "ref"), "--method", method, "--seed", "5",
        "--n", "2", "--repository", str(repository)])
    assert reference.exit_code == 0, reference.output
    for i in range(3):
        result = runner.invoke(synthesize_batch_command, [
            str(attributes), "--out", str(tmp_path / "batch"), "--shard", f"{i}/3", "--method", method,
            "--seed", "5", "--n", "2", "--repository", str(repository), "--chunk-size", "3"])
        assert result.exit_code == 0, result.output
    rows = []
    for i in range(3):
        rows += read_csv(tmp_path / "batch" / f"manifest.shard-{i:05d}-of-00003.csv")
    assert sorted((int(r["row"]), int(r["k"])) for r in rows) == [(r, k) for r in range(11) for k in range(2)]
    for r in rows:
        ours = load_image(tmp_path / "batch" / r["file"], grayscale=True)
        theirs = load_image(tmp_path / "ref" / f"{r['id']}_{r['k']}.png", grayscale=True)
        np.testing.assert_array_equal(ours, theirs)
        assert r["method"] == method and r["backend"] == "embedded"
        expected = ("gan_generator", "1") if method == "gan" else ("face_model_3d_ict", ICT_MODEL_VERSION)
        assert (r["model"], r["version"]) == expected
        data = (tmp_path / "batch" / r["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]


def test_rejected_and_failed_rows_are_reported_without_stopping(tmp_path: Path, repository: Path) -> None:
    attributes = write_attributes(tmp_path / "attrs.csv", 9, bad_rows=(4,))
    from surrogate.adapters import read_attributes

    real = embedded_renderer("gan", repository=repository)
    table = read_attributes(attributes, schema=real.schema)
    poisoned = {row_seed(0, 2, 0, 1), row_seed(0, 6, 0, 1)}

    def flaky(values: np.ndarray, seeds: list[int]) -> np.ndarray:
        if poisoned & set(seeds):
            raise RuntimeError("simulated failure of one row")
        return real.render(values, seeds)

    renderer = Renderer(flaky, real.schema, "gan", "embedded", real.model, real.version)
    rejected = [{"row": r.row, "id": r.id, "reason": r.reason} for r in table.rejected]
    kwargs = dict(source_rows=table.rows, rejected=rejected, chunk_size=4, progress=False)
    result = run_batch(table.values, table.ids, tmp_path / "out", renderer, **kwargs)
    assert (result.planned, result.rendered, result.failed, result.rejected) == (8, 6, 2, 1)
    errors = read_csv(result.errors)
    assert {e["stage"] for e in errors} == {"rejected", "synthesis"}
    assert [e["id"] for e in errors if e["stage"] == "rejected"] == ["face00004"]
    assert "yaw" in next(e["reason"] for e in errors if e["stage"] == "rejected")
    assert all("simulated failure" in e["reason"] for e in errors if e["stage"] == "synthesis")
    # The rerun retries only the failed rows.
    again = run_batch(table.values, table.ids, tmp_path / "out", real, **kwargs)
    assert (again.already_done, again.rendered, again.failed, again.complete) == (6, 2, 0, True)
    assert len(journal_lines(tmp_path / "out" / "manifest.jsonl")) == 8


def test_rerun_with_other_options_is_refused(tmp_path: Path, repository: Path) -> None:
    attributes = write_attributes(tmp_path / "attrs.csv", 3)
    base = [str(attributes), "--out", str(tmp_path / "out"), "--method", "gan",
            "--repository", str(repository)]
    assert CliRunner().invoke(synthesize_batch_command, base).exit_code == 0
    result = CliRunner().invoke(synthesize_batch_command, [*base, "--seed", "9"])
    assert result.exit_code == 1 and "seed" in result.output and "another --out" in result.output
    result = CliRunner().invoke(synthesize_batch_command, [*base, "--backend", "triton", "--method", "3d"])
    assert result.exit_code == 1 and "GAN only" in result.output


def test_torn_journal_line_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"row": 0, "k": 0, "file": "images/a_0.png"}\n{"row": 1, "k"')
    journal = Journal(path)
    assert list(journal.entries) == [(0, 0)]
    assert path.read_text().endswith("}\n")


def test_sigkill_mid_run_then_rerun_finishes_without_redoing(tmp_path: Path, repository: Path) -> None:
    n = 1500
    attributes = write_attributes(tmp_path / "attrs.csv", n)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "surrogate.synthesis_cli", str(attributes), "--out", str(out),
               "--method", "gan", "--repository", str(repository), "--chunk-size", "2", "--seed", "3"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    journal = out / "manifest.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.stat().st_size > 20_000:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = journal_lines(journal) if journal.exists() else []
    assert 0 < len(before) < n
    stamps = {e["file"]: (out / e["file"]).stat().st_mtime_ns for e in before}

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = journal_lines(journal)
    keys = [(e["row"], e["k"]) for e in after]
    assert len(keys) == len(set(keys)) == n  # every image exactly once in the journal
    assert all((out / f).stat().st_mtime_ns == t for f, t in stamps.items())  # nothing journaled redone
    assert not list(out.rglob("*.part"))  # no temp files left behind
    assert f"{len(before)} already done" in rerun.stdout
    # Every image, before or after the kill, is the one an uninterrupted run renders.
    renderer = embedded_renderer("gan", repository=repository)
    sample = after[:: max(1, n // 50)]
    from surrogate.adapters import read_attributes

    table = read_attributes(attributes, schema=renderer.schema)
    expected = renderer.render(table.values[[e["row"] for e in sample]], [e["seed"] for e in sample])
    for entry, image in zip(sample, expected, strict=True):
        np.testing.assert_array_equal(load_image(out / entry["file"], grayscale=True), image)
        assert hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert len(read_csv(out / "manifest.csv")) == n


def test_subject_column_gives_every_row_of_a_subject_one_seed(tmp_path: Path) -> None:
    attributes = write_attributes(tmp_path / "attrs.csv", 4)
    lines = attributes.read_text().splitlines()
    subjects = ["subject", "7", "2", "7", "x"]
    attributes.write_text("\n".join(f"{line},{s}" for line, s in zip(lines, subjects, strict=True)) + "\n")
    base = [str(attributes), "--method", "3d", "--seed", "5", "--n", "2", "--size", "32"]
    result = CliRunner().invoke(synthesize_batch_command, [*base, "--out", str(tmp_path / "bad"),
                                                           "--subject-column", "subject"])
    assert result.exit_code == 1 and "row 4" in result.output and "'x'" in result.output
    attributes.write_text(attributes.read_text().replace(",x\n", ",3\n"))
    result = CliRunner().invoke(synthesize_batch_command, [*base, "--out", str(tmp_path / "out"),
                                                           "--subject-column", "subject"])
    assert result.exit_code == 0, result.output
    seeds = {(int(r["row"]), int(r["k"])): int(r["seed"]) for r in read_csv(tmp_path / "out" / "manifest.csv")}
    # subject s's surrogate k has the seed row s would have had: seed + s*n + k
    assert [seeds[(r, 0)] for r in range(4)] == [5 + 7 * 2, 5 + 2 * 2, 5 + 7 * 2, 5 + 3 * 2]
    assert seeds[(0, 1)] == seeds[(2, 1)] == 5 + 7 * 2 + 1
    # subject 7's two rows are rendered (and journaled) at the median of their genders; the others as read
    from surrogate.adapters import read_attributes

    gender = read_attributes(attributes).values[:, DEFAULT_SCHEMA.index("gender")]
    rendered = {int(r["row"]): float(r["gender"]) for r in read_csv(tmp_path / "out" / "manifest.csv")}
    assert gender[0] != gender[2]
    assert rendered[0] == rendered[2] == pytest.approx(float(np.median(gender[[0, 2]])), abs=1e-4)
    assert rendered[1] == pytest.approx(float(gender[1]), abs=1e-4)
    missing = CliRunner().invoke(synthesize_batch_command, [*base, "--out", str(tmp_path / "m"),
                                                            "--subject-column", "person"])
    assert missing.exit_code == 1 and "'person' is not a column" in missing.output


def test_photoreal_size_it_cannot_render_is_refused_before_any_work(tmp_path: Path) -> None:
    attributes = write_attributes(tmp_path / "attrs.csv", 2)
    for command, args in ((synthesize_command, ["--attributes", str(attributes)]), (synthesize_batch_command,
                                                                                      [str(attributes)])):
        result = CliRunner().invoke(command, [*args, "--out", str(tmp_path / "out"), "--method", "photoreal",
                                              "--size", "100"])
        assert result.exit_code == 1 and "64, 128, 256" in result.output, result.output
        assert not (tmp_path / "out" / "manifest.csv").exists()
