"""config/stockctl.example.yaml documents every setting, with its default, and loads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_core import PydanticUndefined

from stockctl.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "stockctl.example.yaml"

# A top-level key, set (`key: value`) or commented out (`# key: value`).
_KEY_LINE = re.compile(r"^(?P<commented># ?)?(?P<key>[a-z][a-z0-9_]*):(?:\s|$)")


def _documented() -> tuple[dict[str, Any], dict[str, Any]]:
    """(keys that are set, keys that are commented out), each with the value written."""
    active: dict[str, Any] = {}
    commented: dict[str, Any] = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _KEY_LINE.match(line)
        if match is None:
            continue
        key = match["key"]
        assert key not in active and key not in commented, f"{key} documented twice"
        text = line[len(match["commented"] or "") :]
        value = yaml.safe_load(text)[key]
        (commented if match["commented"] else active)[key] = value
    return active, commented


def test_every_setting_is_documented_once() -> None:
    active, commented = _documented()
    assert set(active) | set(commented) == set(Settings.model_fields)


def test_active_keys_are_what_the_yaml_parser_sees() -> None:
    active, _ = _documented()
    assert yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")) == active


def test_set_keys_show_their_default() -> None:
    active, _ = _documented()
    for key, value in active.items():
        default = Settings.model_fields[key].default
        assert default is not PydanticUndefined, f"{key} has a computed default: comment it out"
        assert value == default, f"{key}: example says {value!r}, default is {default!r}"


def test_only_unset_or_computed_defaults_are_commented_out() -> None:
    _, commented = _documented()
    for key in commented:
        default = Settings.model_fields[key].default
        assert default is None or default is PydanticUndefined, f"{key} should be set: {default!r}"


def test_every_key_has_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if _KEY_LINE.match(line):
            above = lines[i - 1]
            assert above.startswith("# ") and not _KEY_LINE.match(above), f"no comment: {line}"


def test_example_loads_through_load_settings() -> None:
    settings = load_settings(EXAMPLE)
    active, _ = _documented()
    for key, value in active.items():
        assert getattr(settings, key) == value


def test_example_loads_from_stockctl_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCTL_CONFIG", str(EXAMPLE))
    assert load_settings().db_pool_max_open == 100


def test_commented_out_examples_are_valid_settings(tmp_path: Path) -> None:
    """Uncommenting every example line still gives a file the settings accept."""
    _, commented = _documented()
    active_text = EXAMPLE.read_text(encoding="utf-8")
    full = tmp_path / "all-keys.yaml"
    full.write_text(active_text + "\n" + yaml.safe_dump(commented), encoding="utf-8")
    settings = load_settings(full)
    assert settings.actor == commented["actor"]
    assert settings.redis_url is not None
