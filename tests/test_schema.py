"""The attribute schema: validation names row and field, JSON round trip, AU subsets, normalisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surrogate.schema import (
    DEFAULT_SCHEMA,
    OPENFACE_AU_NAMES,
    PAPER_AUS,
    AttributeSchema,
    AttributeValidationError,
)


def good_record(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {"yaw": 10.0, "pitch": -5.0, "roll": 2.0, "AU04": 0.0, "AU05": 1.0,
                                 "AU06": 2.0, "AU07": 0.5, "AU12": 4.5, "AU23": 0.0, "gender": 0.3}
    record.update(overrides)
    return record


def problems_of(records: list[dict[str, object]], **kwargs: object) -> list[tuple[int | None, str, str]]:
    with pytest.raises(AttributeValidationError) as info:
        DEFAULT_SCHEMA.validate_records(records, **kwargs)
    return [(p.row, p.field, p.reason) for p in info.value.problems]


def test_default_schema_is_the_papers_ten_attributes() -> None:
    assert DEFAULT_SCHEMA.names == ("yaw", "pitch", "roll", *PAPER_AUS, "gender")
    assert DEFAULT_SCHEMA.action_units == PAPER_AUS
    assert DEFAULT_SCHEMA.spec("yaw").unit == "degrees"
    assert (DEFAULT_SCHEMA.spec("AU12").low, DEFAULT_SCHEMA.spec("AU12").high) == (0.0, 5.0)
    assert (DEFAULT_SCHEMA.spec("gender").low, DEFAULT_SCHEMA.spec("gender").high) == (0.0, 1.0)


def test_valid_records_become_an_array_in_schema_order() -> None:
    values = DEFAULT_SCHEMA.validate_records([good_record(), good_record(yaw="-20")])
    assert values.shape == (2, 10) and values.dtype == np.float32
    assert values[0, DEFAULT_SCHEMA.index("AU12")] == pytest.approx(4.5)
    assert values[1, 0] == pytest.approx(-20.0)  # numeric strings are accepted


def test_missing_field_is_named_with_its_row() -> None:
    record = good_record()
    del record["AU06"]
    assert problems_of([good_record(), record]) == [(1, "AU06", "is missing")]


def test_unknown_field_is_named_unless_extras_are_allowed() -> None:
    found = problems_of([good_record(smile=1.0)])
    assert found[0][:2] == (0, "smile") and "unknown attribute" in found[0][2]
    DEFAULT_SCHEMA.validate_records([good_record(smile=1.0)], allow_extra=True)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "is NaN"),
        (math.inf, "is infinite"),
        (-math.inf, "is infinite"),
        ("nan", "is NaN"),
        (75.0, "75 is outside the valid range [-60, 60] degrees"),
        ("left", "expected a number, got 'left'"),
        (None, "expected a number, got None"),
        (True, "expected a number, got True"),
        ([1.0], "expected a number, got list"),
    ],
)
def test_each_bad_value_names_row_field_and_reason(value: object, reason: str) -> None:
    assert problems_of([good_record(), good_record(), good_record(yaw=value)]) == [(2, "yaw", reason)]


def test_every_problem_is_reported_at_once_with_the_source_and_row_offset() -> None:
    records = [good_record(AU12=6.0), good_record(gender=-0.1, pitch=None)]
    with pytest.raises(AttributeValidationError) as info:
        DEFAULT_SCHEMA.validate_records(records, source="batch.json", first_row=10)
    fields = [(p.row, p.field) for p in info.value.problems]
    assert fields == [(10, "AU12"), (11, "pitch"), (11, "gender")]
    message = str(info.value)
    assert message.startswith("batch.json: 3 invalid attribute value(s)")
    assert "row 10, field 'AU12': 6 is outside the valid range [0, 5] intensity" in message


def test_non_object_record_is_reported() -> None:
    assert problems_of([good_record(), 3.5]) == [(1, "*", "expected an object, got float")]  # type: ignore[list-item]


def test_validate_array_checks_shape_and_values() -> None:
    with pytest.raises(AttributeValidationError, match=r"expected shape \(N, 10\)"):
        DEFAULT_SCHEMA.validate_array(np.zeros((2, 9)))
    bad = np.zeros((2, 10), dtype=np.float32)
    bad[1, DEFAULT_SCHEMA.index("gender")] = np.nan
    with pytest.raises(AttributeValidationError) as info:
        DEFAULT_SCHEMA.validate_array(bad)
    assert [(p.row, p.field, p.reason) for p in info.value.problems] == [(1, "gender", "is NaN")]


def test_json_round_trip_keeps_every_spec() -> None:
    schema = AttributeSchema.from_names(["yaw", "AU01", "AU45", "gender"])
    text = schema.to_json()
    assert json.loads(text)["attributes"][1]["name"] == "AU01"
    again = AttributeSchema.from_json(text)
    assert again == schema and again.names == schema.names
    assert AttributeSchema.from_json(DEFAULT_SCHEMA.to_json()) == DEFAULT_SCHEMA


def test_from_json_refuses_what_is_not_a_schema() -> None:
    with pytest.raises(ValueError, match="not an attribute schema"):
        AttributeSchema.from_json('{"attributes": [{"name": "yaw"}]}')
    with pytest.raises(ValueError, match="not an attribute schema"):
        AttributeSchema.from_json("[1, 2]")


def test_any_openface_au_subset_builds_a_schema() -> None:
    for au in OPENFACE_AU_NAMES:
        schema = AttributeSchema.from_names(["pitch", au])
        assert schema.names == ("pitch", au) and schema.spec(au).high == 5.0
    schema = AttributeSchema.from_names(["AU45", "AU01", "yaw"])  # order is kept
    assert schema.names == ("AU45", "AU01", "yaw") and schema.index("yaw") == 2


def test_unknown_or_duplicate_attributes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown action unit 'AU99'"):
        AttributeSchema.from_names(["yaw", "AU99"])
    with pytest.raises(ValueError, match="duplicate attribute names"):
        AttributeSchema.from_names(["yaw", "yaw"])


def test_normalisation_maps_ranges_to_unit_interval() -> None:
    lows, highs = DEFAULT_SCHEMA.lows[None], DEFAULT_SCHEMA.highs[None]
    np.testing.assert_allclose(DEFAULT_SCHEMA.normalise(lows), 0.0)
    np.testing.assert_allclose(DEFAULT_SCHEMA.normalise(highs), 1.0)
    frontal = DEFAULT_SCHEMA.normalise(np.zeros((1, 10)))
    assert frontal[0, DEFAULT_SCHEMA.index("yaw")] == pytest.approx(0.5)
    np.testing.assert_allclose(DEFAULT_SCHEMA.clip(np.full((1, 10), 99.0)), highs)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=10, max_size=10))
def test_normalisation_round_trip(unit: list[float]) -> None:
    normalised = np.array([unit], dtype=np.float32)
    natural = DEFAULT_SCHEMA.denormalise(normalised)
    DEFAULT_SCHEMA.validate_array(np.clip(natural, DEFAULT_SCHEMA.lows, DEFAULT_SCHEMA.highs))
    np.testing.assert_allclose(DEFAULT_SCHEMA.normalise(natural), normalised, atol=1e-5)
    spec = DEFAULT_SCHEMA.spec("pitch")
    assert spec.denormalise(spec.normalise(12.5)) == pytest.approx(12.5)
