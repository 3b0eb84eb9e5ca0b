"""Import of real-shaped platform result files (fixtures in tests/fixtures/annotation/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotation.mapping import PrivateMapping
from annotation.platforms import LabelFileError, read_labels, task_from_url

FIXTURES = Path(__file__).parent / "fixtures" / "annotation"
A, B, C, D, E = ("a" * 31 + "1", "b" * 31 + "2", "c" * 31 + "3", "d" * 31 + "4", "e" * 31 + "5")


@pytest.fixture(scope="module")
def mapping() -> PrivateMapping:
    return PrivateMapping.read(FIXTURES / "mapping.json")


def reasons(result) -> list[str]:
    return sorted(p.reason.split(":")[0] for p in result.problems)


def test_mturk_results_with_index_column_rejections_duplicates(mapping: PrivateMapping) -> None:
    result = read_labels(FIXTURES / "mturk_results.csv", mapping.question, known_tasks=mapping.tokens)
    assert result.platform == "mturk"
    got = sorted(zip(result.labels["worker"], result.labels["task"], result.labels["label"], strict=True))
    assert got == sorted(
        [("A1WORKER", A, "joy"), ("A2WORKER", A, "joy"), ("A1WORKER", B, "not joy"), ("A1WORKER", E, "joy")]
    )  # E identified from Input.image_url (empty Input.token)
    assert reasons(result) == ["duplicate assignment", "empty answer", "rejected assignment", "unknown task"]
    assert result.labels.set_index("task").loc[B, "time_s"] == 9


def test_labelstudio_json_export(mapping: PrivateMapping) -> None:
    result = read_labels(FIXTURES / "labelstudio_export.json", mapping.question, known_tasks=mapping.tokens)
    assert result.platform == "labelstudio-json"
    # user 3 appears as a user object (task 101) and as a bare id (task 104): one worker, by id
    assert sorted(zip(result.labels["worker"], result.labels["task"], result.labels["label"], strict=True)) == [
        ("3", A, "joy"),
        ("3", D, "not joy"),
        ("4", A, "not joy"),
    ]
    assert reasons(result) == [
        "empty answer",
        "label 'maybe' is not one of the choices ['joy', 'not joy']",
        "skipped",
        "unknown task",
    ]
    # the token of task 102 was found behind Label Studio's upload prefix
    assert {p.task for p in result.problems} >= {B}


def test_labelstudio_csv_export(mapping: PrivateMapping) -> None:
    result = read_labels(FIXTURES / "labelstudio_export.csv", mapping.question, known_tasks=mapping.tokens)
    assert result.platform == "labelstudio-csv"
    assert sorted(zip(result.labels["task"], result.labels["label"], strict=True)) == [
        (A, "joy"),
        (A, "not joy"),
        (C, "not joy"),
    ]
    assert reasons(result) == [
        "empty answer",
        "several choices ['joy', 'not joy'] for a single-choice question",
    ]


def test_wrong_platform_and_wrong_files_are_clear_errors(mapping: PrivateMapping) -> None:
    with pytest.raises(LabelFileError, match="looks like a mturk file"):
        read_labels(FIXTURES / "mturk_results.csv", mapping.question, platform="labelstudio-json")
    with pytest.raises(LabelFileError, match="not a Label Studio export"):
        read_labels(FIXTURES / "unrelated.csv", mapping.question)
    with pytest.raises(LabelFileError, match="task import file"):
        read_labels(FIXTURES / "labelstudio_tasks_import.json", mapping.question)


def test_labels_of_another_batch_are_refused(mapping: PrivateMapping) -> None:
    with pytest.raises(LabelFileError, match="none of its tasks belongs to this batch"):
        read_labels(FIXTURES / "mturk_results.csv", mapping.question, known_tasks=["0" * 32])


def test_task_from_url_variants() -> None:
    assert task_from_url(f"https://h/x/{A}.png") == A
    assert task_from_url(f"/data/upload/3/1f2e3d4c-{A}.png") == A
    assert task_from_url(f"/data/local-files/?d=batch/images/{A}.png") == A
    assert task_from_url("https://h/x/photo_of_bob.png") is None


def test_labelstudio_json_min_export(mapping: PrivateMapping) -> None:
    """Issue 24.7: the JSON-MIN export (one flat object per annotation) is read, not rejected."""
    result = read_labels(FIXTURES / "labelstudio_export_min.json", mapping.question, known_tasks=mapping.tokens)
    assert sorted(zip(result.labels["worker"], result.labels["task"], result.labels["label"], strict=True)) == [
        ("3", A, "joy"),
        ("4", A, "not joy"),
    ]
    assert reasons(result) == ["empty answer", "several choices ['joy', 'not joy'] for a single-choice question"]


@pytest.mark.parametrize("name", ["mturk_results_aws_flattened.csv", "mturk_results_aws_taskanswers.csv"])
def test_mturk_results_in_aws_documented_format(mapping: PrivateMapping, name: str) -> None:
    """Issue 24.4: crowd-radio-group output as AWS documents it, flattened or as Answer.taskAnswers JSON."""
    result = read_labels(FIXTURES / name, mapping.question, known_tasks=mapping.tokens)
    assert result.platform == "mturk"
    got = sorted(zip(result.labels["worker"], result.labels["task"], result.labels["label"], strict=True))
    assert got == [
        ("A1WORKERX", A, "joy"),
        ("A1WORKERX", B, "not joy"),
        ("A2WORKERX", A, "not joy"),
        ("A3WORKERX", D, "joy"),
    ]
    assert reasons(result) == ["empty answer", "rejected assignment"]
    assert result.labels.set_index(["worker", "task"]).loc[("A1WORKERX", B), "time_s"] == 9


def test_mturk_session_hits(mapping: PrivateMapping) -> None:
    """One HIT per session: every slot's answer read, empty slots skipped, an unanswered slot reported."""
    result = read_labels(FIXTURES / "mturk_results_aws_session.csv", mapping.question, known_tasks=mapping.tokens)
    got = sorted(zip(result.labels["worker"], result.labels["task"], result.labels["label"], strict=True))
    worker = "A1WORKERX"
    assert got == [(worker, A, "joy"), (worker, B, "not joy"), (worker, C, "joy"), (worker, D, "not joy")]
    assert reasons(result) == ["empty answer", "rejected assignment"]
