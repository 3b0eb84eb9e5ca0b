"""Attribute adapters and ``surrogate attributes convert`` on fixtures written from each tool's format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from surrogate.adapters import (
    KIND_CONFIDENCE,
    KIND_DUPLICATE,
    KIND_MALFORMED,
    KIND_MISSING,
    KIND_NO_FACE,
    KIND_RANGE,
    KIND_TRACKING,
    AttributeFileError,
    InMemoryFile,
    detect_format,
    read_attributes,
    write_canonical_csv,
)
from surrogate.cli import cli
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema

FIXTURES = Path(__file__).parent / "fixtures" / "attributes"
LIBREFACE_FILL = {"AU07": 0.0, "AU23": 0.0, "gender": 0.5}


def column(table, name: str) -> np.ndarray:  # noqa: ANN001 - tiny helper
    return table.values[:, table.schema.index(name)]


def rejected_map(table) -> dict[int, tuple[str, str]]:  # noqa: ANN001
    return {r.row: (r.id, r.kind) for r in table.rejected}


# -- OpenFace ---------------------------------------------------------------------------------
def test_openface_video_converts_radians_and_excludes_failed_rows() -> None:
    table = read_attributes(FIXTURES / "openface_video.csv")
    assert table.source_format == "openface"
    assert table.rows_read == 8
    assert table.ids == ["openface_video_f1", "openface_video_f2", "openface_video_f6",
                         "openface_video_f7_face1"]
    assert table.rows == [1, 2, 6, 8]
    # pose_Rx/Ry/Rz radians -> pitch/yaw/roll degrees, same signs
    np.testing.assert_allclose(column(table, "yaw"), [-10, 20, 5, -25], atol=1e-3)
    np.testing.assert_allclose(column(table, "pitch"), [5, 4, -3, 10], atol=1e-3)
    np.testing.assert_allclose(column(table, "roll"), [2, -3, 1, 4], atol=1e-3)
    assert column(table, "AU12")[0] == pytest.approx(3.05)
    assert rejected_map(table) == {
        3: ("openface_video_f3", KIND_TRACKING),
        4: ("openface_video_f4", KIND_CONFIDENCE),
        5: ("openface_video_f5", KIND_RANGE),
        7: ("openface_video_f7", KIND_MISSING),
    }
    reasons = {r.row: r.reason for r in table.rejected}
    assert "success=0" in reasons[3] and "not a neutral face" in reasons[3]
    assert reasons[4] == "confidence 0.55 is below the minimum 0.75"
    assert reasons[5].startswith("field 'yaw': 70 is outside the valid range [-60, 60] degrees")
    assert "pose_Ry" in reasons[5]
    assert reasons[7] == "field 'AU12': is empty (the tool wrote no value)"


def test_openface_tiny_overshoots_are_clipped_and_noted_per_row() -> None:
    table = read_attributes(FIXTURES / "openface_video.csv")
    row = table.ids.index("openface_video_f6")
    assert column(table, "AU12")[row] == 5.0 and column(table, "AU06")[row] == 0.0
    assert sorted(a.note for a in table.adjustments) == ["AU06 -0.01 clipped to 0", "AU12 5.02 clipped to 5"]
    assert {a.row for a in table.adjustments} == {6}
    strict = read_attributes(FIXTURES / "openface_video.csv", clip_tolerance=0.0)
    assert "openface_video_f6" not in strict.ids
    assert rejected_map(strict)[6] == ("openface_video_f6", KIND_RANGE)


def test_openface_gender_is_filled_as_unknown_and_said_so() -> None:
    table = read_attributes(FIXTURES / "openface_video.csv")
    assert table.filled == {"gender": 0.5}
    assert np.all(column(table, "gender") == 0.5)
    assert any("'gender' is not in the source" in n for n in table.notes)
    with pytest.raises(AttributeFileError, match="'gender'") as info:
        read_attributes(FIXTURES / "openface_video.csv", fill={})
    assert info.value.column == "gender"


def test_min_confidence_is_a_parameter() -> None:
    table = read_attributes(FIXTURES / "openface_video.csv", min_confidence=0.5)
    assert "openface_video_f4" in table.ids
    assert "openface_video_f3" not in table.ids  # success=0 stays out whatever the threshold


def test_openface_without_face_id_no_leading_spaces_crlf_and_bom() -> None:
    assert (FIXTURES / "openface_video_crlf_bom.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    table = read_attributes(FIXTURES / "openface_video_crlf_bom.csv")
    assert table.ids == [f"openface_video_crlf_bom_f{i}" for i in (1, 2, 3)]
    assert not table.rejected
    np.testing.assert_allclose(column(table, "yaw"), [3, 6, 9], atol=1e-3)
    np.testing.assert_allclose(column(table, "AU12"), [0.5, 1.0, 1.5], atol=1e-6)


def test_openface_image_mode_ids_follow_face_index() -> None:
    table = read_attributes(FIXTURES / "openface_image.csv", id_prefix="subject_12")
    assert table.ids == ["subject_12", "subject_12_face1"]
    np.testing.assert_allclose(column(table, "yaw"), [-5, 12], atol=1e-3)
    assert table.files == [None, None]


def test_openface_any_au_subset_reads_its_intensity_columns() -> None:
    schema = AttributeSchema.from_names(["yaw", "AU01", "AU45"])
    table = read_attributes(FIXTURES / "openface_video.csv", schema=schema)
    assert table.values.shape == (5, 3) and table.filled == {}
    assert "openface_video_f7" in table.ids  # its empty AU12 cell is not part of this schema


def test_openface_presence_only_column_is_not_taken_as_intensity(tmp_path: Path) -> None:
    lines = (FIXTURES / "openface_video.csv").read_text().splitlines()
    src = tmp_path / "no_au12_r.csv"
    src.write_text("\n".join([lines[0].replace(" AU12_r,", " AU12_x,"), *lines[1:]]) + "\n")
    with pytest.raises(AttributeFileError, match="'AU12_r'.*presence column 'AU12_c'") as info:
        read_attributes(src)
    assert info.value.column == "AU12_r"


# -- py-feat ----------------------------------------------------------------------------------
def test_pyfeat_reads_fex_written_by_pandas_with_index_column() -> None:
    table = read_attributes(FIXTURES / "pyfeat_fex.csv")
    assert table.source_format == "pyfeat"
    assert table.ids == ["img_001", "img_002", "img_002_face1"]  # second face in one image gets _face1
    assert table.files[0] == "/data/private/img_001.jpg"
    np.testing.assert_allclose(column(table, "yaw"), [8, -12, 30])
    np.testing.assert_allclose(column(table, "pitch"), [4, -2, 1])
    np.testing.assert_allclose(column(table, "roll"), [-1.5, 0.5, 2])
    # probabilities (auto-detected) -> intensity 5 * p
    np.testing.assert_allclose(column(table, "AU12")[0], 5 * 0.97, rtol=1e-6)
    assert any("auto-detected as probability" in n for n in table.notes)
    assert rejected_map(table) == {4: ("img_003", KIND_NO_FACE), 5: ("img_004", KIND_CONFIDENCE)}


def test_pyfeat_au_scale_can_be_declared_and_is_auto_detected_above_one(tmp_path: Path) -> None:
    table = read_attributes(FIXTURES / "pyfeat_fex.csv", au_scale="intensity")
    np.testing.assert_allclose(column(table, "AU12")[0], 0.97, rtol=1e-6)
    text = (FIXTURES / "pyfeat_fex.csv").read_text().replace(",0.97,", ",3.5,")
    (tmp_path / "fex.csv").write_text(text)
    table = read_attributes(tmp_path / "fex.csv")
    np.testing.assert_allclose(column(table, "AU12")[0], 3.5, rtol=1e-6)
    assert any("auto-detected as intensity" in n for n in table.notes)


def test_flip_negates_pose_for_tools_with_another_convention() -> None:
    table = read_attributes(FIXTURES / "pyfeat_fex.csv", flip=["yaw", "roll"])
    np.testing.assert_allclose(column(table, "yaw"), [-8, 12, -30])
    np.testing.assert_allclose(column(table, "roll"), [1.5, -0.5, -2])
    np.testing.assert_allclose(column(table, "pitch"), [4, -2, 1])
    with pytest.raises(ValueError, match="only pose attributes"):
        read_attributes(FIXTURES / "pyfeat_fex.csv", flip=["AU12"])


def test_pyfeat_windows_paths_give_stems(tmp_path: Path) -> None:
    table = read_attributes(FIXTURES / "pyfeat_fex.csv", min_confidence=0.4)
    assert table.ids[-1] == "img_004" and table.files[-1] == "C:\\Users\\lab\\faces\\img_004.png"


# -- LibreFace --------------------------------------------------------------------------------
def test_libreface_without_au7_au23_needs_an_explicit_policy() -> None:
    with pytest.raises(AttributeFileError) as info:
        read_attributes(FIXTURES / "libreface_video.csv")
    message = str(info.value)
    assert "'au_7_intensity'" in message and "'au_23_intensity'" in message
    assert "--fill AU07=VALUE" in message and info.value.column == "au_7_intensity"


def test_libreface_with_fill_records_what_was_filled() -> None:
    table = read_attributes(FIXTURES / "libreface_video.csv", fill=LIBREFACE_FILL)
    assert table.source_format == "libreface"
    assert table.ids == ["libreface_video_f0", "libreface_video_f1"]
    assert table.files[0] == "./tmp/session_07/0000000000.png"
    assert table.filled == LIBREFACE_FILL
    assert np.all(column(table, "AU07") == 0.0) and np.all(column(table, "AU23") == 0.0)
    np.testing.assert_allclose(column(table, "AU12"), [3.1, 0.0], atol=1e-6)
    np.testing.assert_allclose(column(table, "yaw"), [-4.0, -3.5])
    assert rejected_map(table) == {3: ("libreface_video_f2", KIND_MISSING)}
    assert any("no confidence column" in n for n in table.notes)


def test_libreface_with_a_schema_of_its_own_aus_needs_no_fill() -> None:
    schema = AttributeSchema.from_names(["yaw", "pitch", "roll", "AU04", "AU06", "AU12"])
    table = read_attributes(FIXTURES / "libreface_video.csv", schema=schema)
    assert table.filled == {} and len(table) == 2


# -- canonical CSV and JSON -------------------------------------------------------------------
def test_canonical_csv_ignores_extra_columns_and_rejects_bad_values() -> None:
    table = read_attributes(FIXTURES / "canonical.csv")
    assert table.source_format == "canonical"
    assert table.ids == ["p01", "p02"] and table.files == ["images/p01.png", "images/p02.png"]
    assert any("ignored columns: identity" in n for n in table.notes)
    reasons = {r.id: r.reason for r in table.rejected}
    assert reasons == {"p03": "field 'yaw': expected a number, got 'abc'",
                       "p04": "field 'gender': 1.7 is outside the valid range [0, 1] probability"}


def test_canonical_round_trip_through_the_writer(tmp_path: Path) -> None:
    table = read_attributes(FIXTURES / "openface_video.csv")
    out = tmp_path / "attrs.csv"
    write_canonical_csv(table, out)
    assert out.read_text().splitlines()[0] == "id,file," + ",".join(DEFAULT_SCHEMA.names)
    again = read_attributes(out)
    assert again.source_format == "canonical" and again.ids == table.ids and not again.rejected
    np.testing.assert_allclose(again.values, table.values, atol=1e-4)
    assert list(tmp_path.iterdir()) == [out]  # atomic: no temp file left behind


def test_canonical_csv_passed_through_pandas_keeps_working(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(FIXTURES / "canonical.csv")
    frame.to_csv(tmp_path / "via_pandas.csv")  # adds the unnamed index column
    frame.to_csv(tmp_path / "via_pandas_tab.tsv", sep="\t", lineterminator="\r\n")
    for name in ("via_pandas.csv", "via_pandas_tab.tsv"):
        table = read_attributes(tmp_path / name)
        assert table.ids == ["p01", "p02"]
        np.testing.assert_allclose(column(table, "AU12"), [3.05, 0.0], atol=1e-6)


def test_quoted_fields_with_commas_and_duplicate_ids(tmp_path: Path) -> None:
    names = ",".join(DEFAULT_SCHEMA.names)
    zeros = ",".join(["0"] * 10)
    src = tmp_path / "quoted.csv"
    src.write_text(f'id,file,{names}\na,"dir, with comma/a.png",{zeros}\nb,b.png,{zeros}\na,a2.png,{zeros}\n'
                   f"c,c.png,1,2\n")
    table = read_attributes(src)
    assert table.ids == ["a", "b"] and table.files[0] == "dir, with comma/a.png"
    assert rejected_map(table) == {3: ("a", KIND_DUPLICATE), 4: ("", KIND_MALFORMED)}
    assert "first used by row 1" in table.rejected[0].reason


def test_json_list_reports_null_bool_and_non_objects_per_record() -> None:
    table = read_attributes(FIXTURES / "attributes.json")
    assert table.source_format == "json"
    assert table.ids == ["p01", "p02"] and table.files == ["images/p01.png", None]
    assert column(table, "yaw")[1] == 20.0  # numeric string accepted
    reasons = {r.row: r.reason for r in table.rejected}
    assert reasons[3] == "field 'yaw': expected a number, got None; field 'AU23': expected a number, got True"
    assert reasons[4] == "expected an object, got str"


def test_json_records_object_and_missing_keys(tmp_path: Path) -> None:
    table = read_attributes(FIXTURES / "attributes_records.json")
    assert table.ids == ["a"] and table.files == ["faces/a.png"]
    records = [dict(zip(DEFAULT_SCHEMA.names, [0.0] * 10, strict=True), id="x"), {"id": "y", "yaw": 1}]
    (tmp_path / "r.json").write_text(json.dumps(records))
    table = read_attributes(tmp_path / "r.json")
    assert table.ids == ["x"]
    assert table.rejected[0].reason.startswith("field 'pitch': is missing")


def test_records_round_trip_to_json(tmp_path: Path) -> None:
    table = read_attributes(FIXTURES / "canonical.csv")
    (tmp_path / "a.json").write_text(json.dumps(table.records()))
    again = read_attributes(tmp_path / "a.json")
    assert again.ids == table.ids
    np.testing.assert_allclose(again.values, table.values)


# -- detection and whole-file errors ----------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [("openface_video.csv", "openface"), ("openface_image.csv", "openface"), ("pyfeat_fex.csv", "pyfeat"),
     ("libreface_video.csv", "libreface"), ("canonical.csv", "canonical"), ("attributes.json", "json")],
)
def test_auto_detection(name: str, expected: str) -> None:
    assert detect_format(FIXTURES / name)[0] == expected


def test_unknown_header_lists_what_was_looked_for() -> None:
    with pytest.raises(AttributeFileError) as info:
        read_attributes(FIXTURES / "unknown_tool.csv")
    message = str(info.value)
    assert "unknown_tool.csv" in message and "headYaw" in message
    for looked_for in ("OpenFace", "py-feat", "LibreFace", "canonical", "JSON"):
        assert looked_for in message


def test_wrong_explicit_format_names_the_missing_column() -> None:
    with pytest.raises(AttributeFileError, match="missing column 'FaceScore'") as info:
        read_attributes(FIXTURES / "openface_video.csv", format="pyfeat")
    assert info.value.column == "FaceScore"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\xff\xfe\x00bad", "not UTF-8"), (b"[1, 2", "not valid JSON"),
     (b'{"rows": []}', "'records'")],
)
def test_unreadable_files_raise_attribute_file_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(AttributeFileError, match=message):
        read_attributes(path)
    with pytest.raises(AttributeFileError, match="no such file"):
        read_attributes(tmp_path / "absent.csv")


@pytest.mark.parametrize("name", [p.name for p in sorted(FIXTURES.iterdir())
                                  if p.suffix in (".csv", ".json") and p.name != "unknown_tool.csv"])
def test_in_memory_file_reads_exactly_like_the_path(name: str) -> None:
    """The service parses uploads from memory: same rows, ids, rejections and notes as from disk."""
    path = FIXTURES / name
    fill = {"AU07": 0.0, "AU23": 0.0, "gender": 0.5} if name.startswith("libreface") else None
    from_disk = read_attributes(path, fill=fill)
    from_memory = read_attributes(InMemoryFile(name, path.read_bytes()), fill=fill)
    assert from_memory.ids == from_disk.ids and from_memory.files == from_disk.files
    np.testing.assert_array_equal(from_memory.values, from_disk.values)
    assert [(r.row, r.id, r.reason) for r in from_memory.rejected] == [
        (r.row, r.id, r.reason) for r in from_disk.rejected]
    assert from_memory.notes == from_disk.notes


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "upload.csv: empty"), (b"\xff\xfe\x00bad", "upload.csv: not UTF-8"),
     (b"a,b\n1,2\n", "upload.csv: cannot tell the format")],
)
def test_in_memory_file_errors_name_the_upload(content: bytes, message: str) -> None:
    with pytest.raises(AttributeFileError, match=message):
        read_attributes(InMemoryFile("upload.csv", content))


# -- CLI --------------------------------------------------------------------------------------
def test_cli_convert_writes_canonical_and_rejected_csv(tmp_path: Path) -> None:
    out = tmp_path / "out" / "attrs.csv"
    result = CliRunner().invoke(cli, ["attributes", "convert", str(FIXTURES / "openface_video.csv"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "format: openface" in result.output and "format detected: openface" in result.output
    assert "rows read: 8   accepted: 4   rejected: 4" in result.output
    assert "rejected, tracking failed: 1" in result.output and "clipped row 6" in result.output
    assert read_attributes(out).ids[0] == "openface_video_f1"
    rejected = (tmp_path / "out" / "attrs.rejected.csv").read_text().splitlines()
    assert rejected[0] == "row,id,kind,reason" and len(rejected) == 5
    assert rejected[1].startswith("3,openface_video_f3,tracking failed,")


def test_cli_libreface_fill_and_au_subset(tmp_path: Path) -> None:
    runner = CliRunner()
    src = str(FIXTURES / "libreface_video.csv")
    failed = runner.invoke(cli, ["attributes", "convert", src, "--out", str(tmp_path / "a.csv")])
    assert failed.exit_code == 1 and "--fill AU07=VALUE" in failed.output and "Traceback" not in failed.output
    filled = runner.invoke(cli, ["attributes", "convert", src, "--out", str(tmp_path / "b.csv"),
                                 "--fill", "AU07=0", "--fill", "AU23=0"])
    assert filled.exit_code == 0, filled.output and "'AU07' is not in the source" in filled.output
    subset = runner.invoke(cli, ["attributes", "convert", src, "--out", str(tmp_path / "c.csv"),
                                 "--aus", "au4,6,AU12"])
    assert subset.exit_code == 0, subset.output
    assert (tmp_path / "c.csv").read_text().splitlines()[0] == "id,file,yaw,pitch,roll,AU04,AU06,AU12,gender"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--fill", "AU07"], "NAME=VALUE"), (["--fill", "gender=2"], "outside the valid range"),
     (["--aus", "AU99"], "unknown action unit"), (["--flip", "AU12"], "only pose attributes"),
     (["--format", "pyfeat"], "missing column 'FaceScore'"), (["--fill", "AU26=0"], "not in the schema")],
)
def test_cli_errors_are_clean(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["attributes", "convert", str(FIXTURES / "openface_video.csv"),
                                      "--out", str(tmp_path / "o.csv"), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_cli_refuses_to_overwrite_the_source_and_reports_no_usable_rows(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(f"id,{','.join(DEFAULT_SCHEMA.names)}\na,{','.join(['nan'] * 10)}\n")
    runner = CliRunner()
    same = runner.invoke(cli, ["attributes", "convert", str(src), "--out", str(src)])
    assert same.exit_code != 0 and "overwrite the source" in same.output
    empty = runner.invoke(cli, ["attributes", "convert", str(src), "--out", str(tmp_path / "o.csv")])
    assert empty.exit_code == 1 and "no row" in empty.output
    assert not (tmp_path / "o.csv").exists() and (tmp_path / "o.rejected.csv").exists()


def test_cli_schema_prints_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["attributes", "schema", "--aus", "AU01,AU45", "--no-gender"])
    assert result.exit_code == 0, result.output
    schema = AttributeSchema.from_json(result.output)
    assert schema.names == ("yaw", "pitch", "roll", "AU01", "AU45")
    (tmp_path / "schema.json").write_text(result.output)
    converted = CliRunner().invoke(cli, ["attributes", "convert", str(FIXTURES / "openface_image.csv"),
                                         "--out", str(tmp_path / "o.csv"),
                                         "--schema", str(tmp_path / "schema.json")])
    assert converted.exit_code == 0, converted.output
    assert math.isclose(read_attributes(tmp_path / "o.csv", schema=schema).values[0, 0], -5.0, abs_tol=1e-3)
