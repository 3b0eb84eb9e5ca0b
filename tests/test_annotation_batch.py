"""Publish: the crowd batch holds nothing private; the mapping holds everything needed to go back."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from annotation.batch import PublishError, load_manifest, publish_batch, render_surrogates
from annotation.mapping import PrivateMapping
from annotation.question import GoldRule, Question
from surrogate.schema import DEFAULT_SCHEMA

PRIVATE_IDS = ["alice_hernandez_2019", "bob_okafor_visit3", "carol_zhang_clinic7"]
# distinctive values (4+ significant digits) so a leak cannot hide among ordinary numbers
VALUES = {
    "yaw": [12.3457, -7.6543, 3.2109],
    "AU12": [4.3219, 0.1357, 2.4681],
    "gender": [0.8642, 0.1975, 0.5319],
}
SECRET_METADATA = "Patient: Alice Hernandez, DOB 1970-01-01"


def _png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append(kind.decode("ascii"))
        pos += 12 + length
    return chunks


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    """A canonical attribute CSV of three private faces, with photos that carry private metadata."""
    photos = tmp_path / "private" / "photos"
    photos.mkdir(parents=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET_METADATA)
    rows = []
    for i, pid in enumerate(PRIVATE_IDS):
        Image.fromarray(np.full((40, 40, 3), 60 + 40 * i, np.uint8)).save(photos / f"{pid}.png", pnginfo=info)
        row = {"id": pid, "file": f"photos/{pid}.png"}
        row.update({n: VALUES.get(n, [0.0] * 3)[i] for n in DEFAULT_SCHEMA.names})
        rows.append(row)
    path = tmp_path / "private" / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "file", *DEFAULT_SCHEMA.names])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _assert_nothing_private(batch: Path, manifest: Path) -> None:
    forbidden = [
        *PRIVATE_IDS,
        *(f"{p}.png" for p in PRIVATE_IDS),
        "photos/",
        str(manifest.parent),
        "Hernandez",
        "manifest",
    ]
    for values in VALUES.values():
        for v in values:
            forbidden += [repr(v), f"{v:g}", f"{v:.4f}", repr(float(np.float32(v)))]
    files = [p for p in batch.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for needle in forbidden:
            assert needle.encode() not in data, f"{needle!r} leaked into {path.name}"
        if path.suffix == ".png":
            assert set(_png_chunks(data)) <= {"IHDR", "PLTE", "IDAT", "IEND"}, (
                f"{path.name} carries metadata chunks"
            )


def test_raw_pilot_batch_leaks_nothing(tmp_path: Path, manifest: Path) -> None:
    table = load_manifest(manifest)
    summary = publish_batch(
        table,
        tmp_path / "batch",
        tmp_path / "private" / "mapping.json",
        question=Question(),
        methods=(),
        include_raw=True,
        image_root=manifest.parent,
        progress=False,
    )
    assert summary.n_items == 3
    _assert_nothing_private(tmp_path / "batch", manifest)
    mapping = PrivateMapping.read(summary.mapping_path)
    assert sorted(e.private_id for e in mapping.entries) == sorted(PRIVATE_IDS)
    assert all(e.method == "raw" and e.seed is None for e in mapping.entries)


def test_surrogate_batch_with_gold_leaks_nothing_and_is_reproducible(tmp_path: Path, manifest: Path) -> None:
    pytest.importorskip("surrogate.synthesis_3d")
    table = load_manifest(manifest)
    gold = [GoldRule.parse("joy=AU12:5,AU06:4"), GoldRule.parse("not joy=AU12:0")]
    runs = []
    for run in ("one", "two"):
        summary = publish_batch(
            table,
            tmp_path / run,
            tmp_path / "private" / f"{run}.json",
            question=Question(),
            methods=("3d",),
            include_raw=True,
            image_root=manifest.parent,
            seed=11,
            size=32,
            gold_rules=gold,
            gold_per_rule=2,
            progress=False,
        )
        assert (summary.n_items, summary.n_gold) == (6, 4)
        _assert_nothing_private(tmp_path / run, manifest)
        runs.append(PrivateMapping.read(summary.mapping_path))
    first, second = runs
    # tokens are fresh random names; the set of seeds follows the batch seed, but which face gets which
    # seed and the crowd order are secret draws kept in the mapping; each image re-renders from it
    assert set(first.tokens).isdisjoint(second.tokens)
    assert sorted(e.seed for e in first.entries if e.seed is not None) == sorted(
        e.seed for e in second.entries if e.seed is not None
    )
    for entry in [e for e in first.entries if e.method != "raw"][:3]:
        image = Image.open(io.BytesIO((tmp_path / "one" / "images" / f"{entry.token}.png").read_bytes()))
        values = np.asarray([entry.attributes], np.float32)
        again = render_surrogates(entry.method, first.schema, values, [entry.seed], 32)
        assert np.array_equal(np.asarray(image), again[0])
    gold_entries = first.gold()
    assert {e.gold_label for e in gold_entries} == {"joy", "not joy"}
    assert all(first.attribute(e, "AU12") == 5.0 for e in gold_entries if e.gold_label == "joy")
    tasks = json.loads((tmp_path / "one" / "labelstudio_tasks.json").read_text())
    assert [t["data"]["token"] for t in tasks] == first.tokens


def test_platform_files_match_the_question(tmp_path: Path, manifest: Path) -> None:
    question = Question(name="anger", text="Is this face angry?", choices=("angry", "not angry", "unsure"))
    publish_batch(
        load_manifest(manifest),
        tmp_path / "b",
        tmp_path / "m.json",
        question=question,
        methods=(),
        include_raw=True,
        image_root=manifest.parent,
        url_prefix="https://cdn.example.org/b1",
        progress=False,
    )
    config = (tmp_path / "b" / "labelstudio_config.xml").read_text()
    assert '<Choices name="anger"' in config and '<Choice value="unsure"/>' in config
    template = (tmp_path / "b" / "mturk_template.html").read_text()
    assert 'name="anger.option_2"' in template and "${image_url}" in template
    # one external script (MTurk's own), and an inline check that refuses a submit without an answer
    assert template.count("<script src=") == 1 and "assets.crowd.aws/crowd-html-elements.js" in template
    assert "preventDefault" in template and 'crowd-radio-group data-answer="anger"' in template
    rows = list(csv.DictReader((tmp_path / "b" / "mturk_input.csv").open()))
    assert all(r["image_url"] == f"https://cdn.example.org/b1/{r['token']}.png" for r in rows)
    assert all((tmp_path / "b" / "images" / f"{r['token']}.png").is_file() for r in rows)


def test_unsafe_or_bad_requests_are_refused(tmp_path: Path, manifest: Path) -> None:
    table = load_manifest(manifest)
    kwargs = dict(
        question=Question(), methods=(), include_raw=True, image_root=manifest.parent, progress=False
    )
    with pytest.raises(PublishError, match="must not be inside the crowd batch"):
        publish_batch(table, tmp_path / "b", tmp_path / "b" / "mapping.json", **kwargs)
    with pytest.raises(PublishError, match="not one of the choices"):
        publish_batch(
            table,
            tmp_path / "c",
            tmp_path / "c.json",
            question=Question(),
            methods=("3d",),
            gold_rules=[GoldRule.parse("happy=AU12:5")],
            progress=False,
        )
    with pytest.raises(PublishError, match="not found"):
        publish_batch(table, tmp_path / "d", tmp_path / "d.json", **{**kwargs, "image_root": tmp_path})
    publish_batch(table, tmp_path / "e", tmp_path / "e.json", **kwargs)
    with pytest.raises(PublishError, match="not empty"):
        publish_batch(table, tmp_path / "e", tmp_path / "e2.json", **kwargs)
    with pytest.raises(ValueError, match="at least two choices"):
        Question(choices=("joy",))


def _fake_renderer(method: str, schema, values: np.ndarray, seeds, size: int) -> np.ndarray:
    """Fast stand-in for the renderers: a grey level per seed (the leak checks need no real faces)."""
    return np.stack([np.full((size, size), (int(s) * 37 + (method == "gan") * 101) % 256, np.uint8) for s in seeds])


def _wide_manifest(tmp_path: Path, n: int = 20) -> Path:
    """n private faces sorted by a patient number, each with a consented photo."""
    photos = tmp_path / "private" / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "private" / "wide.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "file", *DEFAULT_SCHEMA.names])
        for i in range(n):
            Image.fromarray(np.full((24, 24, 3), i * 9, np.uint8)).save(photos / f"patient{i:04d}.png")
            values = {name: 0.0 for name in DEFAULT_SCHEMA.names} | {"AU12": 5.0 * i / n, "gender": 0.5}
            writer.writerow([f"patient{i:04d}", f"photos/patient{i:04d}.png", *values.values()])
    return path


def _publish(table, tmp_path: Path, name: str, **kwargs):
    options = dict(
        question=Question(),
        methods=("3d", "gan"),
        include_raw=True,
        seed=7,
        size=16,
        gold_rules=[GoldRule.parse("joy=AU12:5,AU06:4"), GoldRule.parse("not joy=AU12:0")],
        gold_per_rule=2,
        renderer=_fake_renderer,
        progress=False,
        url_prefix="https://files.example.org/crowd/images/",
        image_root=tmp_path / "private",
    )
    options.update(kwargs)
    return publish_batch(table, tmp_path / name, tmp_path / "private" / f"{name}.json", **options)


def test_published_order_reveals_neither_manifest_nor_method(tmp_path: Path) -> None:
    """Issue 24.1: the batch seed must not undo the shuffle; same arguments -> different orders."""
    from surrogate.noise import STREAM_TASK_ORDER, rng_for

    table = load_manifest(_wide_manifest(tmp_path))
    orders = []
    for run in ("one", "two"):
        mapping = PrivateMapping.read(_publish(table, tmp_path, run).mapping_path)
        tasks = json.loads((tmp_path / run / "labelstudio_tasks.json").read_text())
        assert [t["data"]["token"] for t in tasks] == mapping.tokens
        orders.append([(e.kind, e.method, e.private_id, e.gold_label) for e in mapping.entries])
        # the old attack: list the tasks as publishing renders them and apply the seeded permutation
        rendered = sorted(
            mapping.entries,
            key=lambda e: (
                (e.method, e.kind) == ("raw", "item"),
                ("3d", "gan", "raw").index(e.method),
                e.kind == "gold",
                e.private_id or "",
                e.gold_label or "",
                mapping.attribute(e, "gender"),
            ),
        )
        guess = rng_for(7, STREAM_TASK_ORDER).permutation(len(rendered))
        assert [rendered[i].token for i in guess] != mapping.tokens
    assert orders[0] != orders[1]
    # which face got which seed is secret too (the 3-D identity follows the seed)
    seeds = [
        {e.private_id: e.seed for e in PrivateMapping.read(tmp_path / "private" / f"{r}.json").items(["3d"])}
        for r in ("one", "two")
    ]
    assert seeds[0] != seeds[1]


def test_file_times_and_inodes_do_not_follow_the_manifest(tmp_path: Path) -> None:
    """Issue 24.2: one fixed time on every published file; images reach the disk in crowd order."""
    from annotation.batch import PUBLISHED_MTIME

    table = load_manifest(_wide_manifest(tmp_path))
    summary = _publish(table, tmp_path, "b")
    published = [tmp_path / "b", *(tmp_path / "b").rglob("*")]
    assert {p.stat().st_mtime for p in published} == {PUBLISHED_MTIME}
    mapping = PrivateMapping.read(summary.mapping_path)
    by_inode = sorted((tmp_path / "b" / "images").iterdir(), key=lambda p: p.stat().st_ino)
    manifest_order = [e.token for e in sorted(mapping.entries, key=lambda e: (e.kind, e.method, e.private_id or ""))]
    assert [p.stem for p in by_inode] != manifest_order


def test_overwrite_leaves_exactly_the_new_batch(tmp_path: Path) -> None:
    """Issue 24.3: a surrogates-only export over a raw pilot leaves no raw photo or old surrogate."""
    table = load_manifest(_wide_manifest(tmp_path, n=5))
    _publish(table, tmp_path, "b")
    summary = _publish(table, tmp_path, "b", include_raw=False, methods=("3d",), gold_rules=(), overwrite=True)
    mapping = PrivateMapping.read(summary.mapping_path)
    assert {p.stem for p in (tmp_path / "b" / "images").iterdir()} == set(mapping.tokens)
    assert {e.method for e in mapping.entries} == {"3d"}
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".previous-" in p.name]  # none left
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(PublishError, match=r"notes\.txt"):
        _publish(table, tmp_path, "b", overwrite=True)
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("prefix", ["images/", "http://files.example.org/images/", "/data/local-files/?d=b/"])
def test_mturk_files_need_an_https_prefix(tmp_path: Path, prefix: str) -> None:
    """Issue 24.5: a HIT cannot load relative or http:// images, so no MTurk input is written for them."""
    table = load_manifest(_wide_manifest(tmp_path, n=3))
    summary = _publish(table, tmp_path, "b", url_prefix=prefix, gold_rules=())
    assert not (tmp_path / "b" / "mturk_input.csv").exists()
    assert any("https://" in w for w in summary.warnings)
    assert (tmp_path / "b" / "labelstudio_tasks.json").is_file()
    good = _publish(table, tmp_path, "c", gold_rules=())
    assert good.warnings == [] and (tmp_path / "c" / "mturk_input.csv").is_file()


def test_sessions_round_trip_through_both_platforms(tmp_path: Path) -> None:
    """The paper's design: one task/HIT per session holding every version of its faces, answers inside."""
    from annotation.platforms import read_labels
    from annotation.simulate import CrowdConfig, simulate_crowd, write_labelstudio_export, write_mturk_results

    table = load_manifest(_wide_manifest(tmp_path, n=7))
    summary = _publish(table, tmp_path, "b", session_faces=3)
    mapping = PrivateMapping.read(summary.mapping_path)
    # 3, 2 and 2 faces x 3 versions + 8 gold (2 rules x 2 items x 2 surrogate methods)
    assert [len(x.tokens) for x in mapping.sessions] == [17, 14, 14]
    faces = [{mapping[t].private_id for t in x.tokens} - {None} for x in mapping.sessions]
    assert sum(len(f) for f in faces) == 7 and not set.intersection(*faces)
    for x in mapping.sessions:  # every version of a session's faces is in that session
        assert {mapping[t].method for t in x.tokens if mapping[t].kind == "item"} == {"raw", "3d", "gan"}
    rows = list(csv.DictReader((tmp_path / "b" / "mturk_input.csv").open()))
    assert len(rows) == 3 and rows[2]["token_16"] == "" and rows[0]["token_0"] == mapping.sessions[0].tokens[0]
    template = (tmp_path / "b" / "mturk_template.html").read_text()
    assert template.count("<crowd-radio-group") == 17 and "${image_url_16}" in template
    assert "Consent" in template and 'crowd-checkbox name="consent" required' in template
    assert "crowd-checkbox[required]" in template and "<li>Judge the expression" in template
    texts = {p.name for p in (tmp_path / "b" / "texts").iterdir()}
    assert texts == {"instructions.md", "consent.md", "qualification.md"}
    tasks = json.loads((tmp_path / "b" / "labelstudio_tasks.json").read_text())
    assert len(tasks) == 3 and "Repeater" in (tmp_path / "b" / "labelstudio_config.xml").read_text()
    _assert_nothing_private(tmp_path / "b", tmp_path / "private" / "wide.csv")

    truth = {e.private_id: "joy" if mapping.attribute(e, "AU12") >= 2 else "not joy" for e in mapping.items()}
    crowd = simulate_crowd(mapping, truth, CrowdConfig(n_workers=4, seed=2))
    assert crowd.labels.groupby("worker")["session"].nunique().max() == 1  # a worker sits one session
    for writer, name in ((write_mturk_results, "r.csv"), (write_labelstudio_export, "r.json")):
        writer(crowd, mapping, tmp_path / name)
        result = read_labels(tmp_path / name, mapping.question, known_tasks=mapping.tokens)
        assert not result.problems, result.problems[:3]
        # Label Studio names users by numeric id (100 + rank of the simulated worker)
        ids = {str(100 + i): w for i, w in enumerate(sorted(crowd.labels["worker"].unique()))}
        workers = [ids.get(w, w) for w in result.labels["worker"]]
        got = sorted(zip(workers, result.labels["task"], result.labels["label"], strict=True))
        assert got == sorted(zip(crowd.labels["worker"], crowd.labels["task"], crowd.labels["label"], strict=True))


def test_subject_ids_give_one_seed_per_private_person(tmp_path: Path) -> None:
    table = load_manifest(_wide_manifest(tmp_path, 6))
    table.values[:, table.schema.index("gender")] = [0.6, 0.2, 0.9, 0.4, 0.3, 0.7]  # photos read differently
    subjects = ["p1", "p2", "p1", "p3", "p2", "p1"]
    summary = _publish(table, tmp_path, "subjects", methods=("photoreal",), include_raw=False, size=64,
                      subjects=subjects, gold_rules=[])
    mapping = PrivateMapping.read(summary.mapping_path)
    seed_of = {e.private_id: e.seed for e in mapping.items()}
    by_subject: dict[str, set[int]] = {}
    for row_id, subject in zip(table.ids, subjects, strict=True):
        by_subject.setdefault(subject, set()).add(seed_of[row_id])
    assert all(len(seeds) == 1 for seeds in by_subject.values())
    assert len({next(iter(s)) for s in by_subject.values()}) == 3  # three people, three seeds
    assert {e.method for e in mapping.items()} == {"photoreal"}
    # and one gender per person: the median of their photos' readings, which the mapping records
    g = table.schema.index("gender")
    gender_of = {e.private_id: e.attributes[g] for e in mapping.items()}
    for subject in set(subjects):
        rows = [i for i, s in enumerate(subjects) if s == subject]
        median = float(np.median(table.values[rows, g]))
        assert all(gender_of[table.ids[i]] == pytest.approx(median, abs=1e-5) for i in rows)
    assert gender_of[table.ids[0]] == pytest.approx(0.7)  # p1: median of 0.6, 0.9, 0.7
    with pytest.raises(PublishError, match="renders"):
        _publish(table, tmp_path, "size", methods=("photoreal",), size=16)
    with pytest.raises(PublishError, match="subject ids"):
        _publish(table, tmp_path, "short", subjects=subjects[:2])


def test_publish_command_reads_the_subject_column_and_names_a_missing_one(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from annotation.cli import annotate_group

    manifest = _wide_manifest(tmp_path, 3)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(f"{line},{s}" for line, s in zip(lines, ["subject", "a", "b", "a"],
                                                                     strict=True)) + "\n")
    base = ["publish", str(manifest), "--batch", str(tmp_path / "batch"), "--method", "3d", "--size", "32"]
    missing = CliRunner().invoke(annotate_group, [*base, "--mapping", str(tmp_path / "m1.json"),
                                                  "--subject-column", "person"])
    assert missing.exit_code == 1 and "'person' is not a column" in missing.output
    done = CliRunner().invoke(annotate_group, [*base, "--mapping", str(tmp_path / "m2.json"),
                                               "--subject-column", "subject"])
    assert done.exit_code == 0, done.output
    seeds = {e.private_id: e.seed for e in PrivateMapping.read(tmp_path / "m2.json").items()}
    assert seeds["patient0000"] == seeds["patient0002"] != seeds["patient0001"]


def test_the_old_name_export_still_publishes_and_says_it_is_now_publish(tmp_path: Path) -> None:
    """'annotate export' was renamed (it collided with ONNX export); old scripts still work, with a notice."""
    from click.testing import CliRunner

    from annotation.cli import annotate_group

    manifest = _wide_manifest(tmp_path, 2)
    args = [str(manifest), "--method", "3d", "--size", "32"]
    old = CliRunner().invoke(annotate_group, ["export", *args, "--batch", str(tmp_path / "old"),
                                              "--mapping", str(tmp_path / "old.json")])
    new = CliRunner().invoke(annotate_group, ["publish", *args, "--batch", str(tmp_path / "new"),
                                              "--mapping", str(tmp_path / "new.json")])
    assert old.exit_code == 0 and new.exit_code == 0, old.output + new.output
    notice = "'surrogate annotate export' is now 'surrogate annotate publish'"
    assert notice in old.stderr and notice not in new.stderr
    old_items, new_items = (PrivateMapping.read(tmp_path / f"{n}.json").items() for n in ("old", "new"))
    assert sorted(e.private_id for e in old_items) == sorted(e.private_id for e in new_items)
    commands = [line.split()[0] for line in CliRunner().invoke(annotate_group, ["--help"]).output.split(
        "Commands:")[1].splitlines() if line.startswith("  ")]
    assert "publish" in commands and "export" not in commands
