"""The shared settings-file builder: every wrong key or type is an error naming file, section and key."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from surrogate.configfile import build_dataclass, load_settings, load_toml


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Inner:
    size: int = 64
    rate: float = 0.5
    enabled: bool = True
    name: str = "x"
    pair: tuple[float, float] = (0.0, 1.0)
    ranks: tuple[int, ...] = (1, 5)


@dataclass(frozen=True)
class Outer:
    seed: int = 0
    methods: tuple[str, ...] = ("3d", "gan")
    inner: Inner = field(default_factory=Inner)


def build(data: dict, **kwargs) -> Outer:
    return build_dataclass(Outer, data, "run.toml", SettingsError, **kwargs)


def test_missing_keys_keep_defaults_and_nested_tables_override() -> None:
    assert build({}) == Outer()
    built = build({"seed": 3, "inner": {"size": 32, "pair": [0.2, 0.8]}})
    assert built.seed == 3 and built.inner.size == 32 and built.inner.pair == (0.2, 0.8)
    assert built.inner.rate == Inner().rate and built.methods == ("3d", "gan")


def test_ints_and_floats() -> None:
    built = build({"seed": 4.0, "inner": {"rate": 2}})
    assert built.seed == 4 and type(built.seed) is int
    assert built.inner.rate == 2.0 and type(built.inner.rate) is float
    with pytest.raises(SettingsError, match=r"run\.toml: inner\.size must be an integer, got 3\.5"):
        build({"inner": {"size": 3.5}})
    with pytest.raises(SettingsError, match=r"inner\.size must be an integer, got True"):
        build({"inner": {"size": True}})
    with pytest.raises(SettingsError, match=r"inner\.rate must be a number, got 'fast'"):
        build({"inner": {"rate": "fast"}})
    with pytest.raises(SettingsError, match=r"inner\.rate must be a number, got False"):
        build({"inner": {"rate": False}})


def test_tuples_check_their_elements_and_length() -> None:
    built = build({"methods": ["gan"], "inner": {"ranks": [1, 2, 10.0], "pair": (1, 2)}})
    assert built.methods == ("gan",) and built.inner.ranks == (1, 2, 10) and built.inner.pair == (1.0, 2.0)
    with pytest.raises(SettingsError, match=r"methods must be a list, got 'gan'"):
        build({"methods": "gan"})
    with pytest.raises(SettingsError, match=r"methods\[1\] must be a string, got 3"):
        build({"methods": ["gan", 3]})
    with pytest.raises(SettingsError, match=r"inner\.pair must be a list of 2 values"):
        build({"inner": {"pair": [1.0]}})
    with pytest.raises(SettingsError, match=r"inner\.ranks\[0\] must be an integer"):
        build({"inner": {"ranks": [1.5]}})


@pytest.mark.parametrize(("data", "message"), [
    ({"sede": 1}, r"run\.toml: unknown key 'sede' \(known: seed, methods, inner\)"),
    ({"inner": {"sise": 1}}, r"run\.toml: unknown key 'inner\.sise' \(known in \[inner\]: size, rate"),
    ({"inner": 3}, r"run\.toml: \[inner\] must be a table, got 3"),
    ({"inner": {"enabled": "yes"}}, r"inner\.enabled must be true or false, got 'yes'"),
    ({"inner": {"enabled": 1}}, r"inner\.enabled must be true or false, got 1"),
    ({"inner": {"name": 7}}, r"inner\.name must be a string, got 7"),
])
def test_each_error_names_file_section_and_key(data: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        build(data)


def test_top_level_must_be_a_table_and_error_type_defaults_to_value_error() -> None:
    with pytest.raises(ValueError, match="the top level must be a table"):
        build_dataclass(Outer, [1, 2], "x.json")  # type: ignore[arg-type]


def test_non_negative_rejects_negative_numbers_anywhere() -> None:
    assert build({"inner": {"rate": -1.0}}).inner.rate == -1.0
    with pytest.raises(SettingsError, match=r"inner\.rate must be a number >= 0, got -1\.0"):
        build({"inner": {"rate": -1.0}}, non_negative=True)
    with pytest.raises(SettingsError, match=r"inner\.ranks\[1\] must be a number >= 0"):
        build({"inner": {"ranks": [1, -5]}}, non_negative=True)


def test_files_name_themselves_on_read_and_parse_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("seed = 2\n[inner]\nsize = 16\n")
    assert build_dataclass(Outer, load_toml(good), str(good)).inner.size == 16
    with pytest.raises(SettingsError, match=r"missing\.toml: cannot read"):
        load_toml(tmp_path / "missing.toml", SettingsError)
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 2\n")
    with pytest.raises(SettingsError, match=r"bad\.toml: not valid TOML"):
        load_toml(bad, SettingsError)
    (tmp_path / "ok.json").write_text(json.dumps({"seed": 5}))
    assert load_settings(tmp_path / "ok.json") == {"seed": 5}
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(SettingsError, match=r"list\.json: expected an object"):
        load_settings(tmp_path / "list.json", SettingsError)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SettingsError, match=r"broken\.json: not valid JSON"):
        load_settings(tmp_path / "broken.json", SettingsError)
    assert load_settings(good, SettingsError)["inner"] == {"size": 16}
