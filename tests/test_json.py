"""The JSON outputs: a schema version, fields for what the text says in phrases, and every
field documented in docs/json.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from hwcaps_fs.commands.report import SCHEMA
from hwcaps_fs.core.resolve import WHY
from tests.builders import variant_store
from tests.mounting import hwcaps_fs

DOC = Path(__file__).resolve().parents[1] / "docs" / "json.md"


def fields(value: Any, prefix: str = "") -> set[str]:
    """Every field name in ``value``, as docs/json.md writes them (``levels[].name``); the
    keys of ``missing`` are level names, not fields."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(prefix + key)
            if key != "missing":
                found |= fields(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        for item in value:
            found |= fields(item, prefix[:-1] + "[].")
    return found


def documented(section: str) -> set[str]:
    """The field names in the first column of ``section``'s table and of the common one."""
    text = DOC.read_text()
    common = text.split("\n## ")[0]
    body = next(part for part in text.split("\n## ") if part.startswith(section))
    names = set()
    for row in re.findall(r"^\| (.+?) \|", common + body, re.MULTILINE):
        names.update(re.findall(r"`([^`]+)`", row))
    return names


def output(*args: str) -> dict[str, Any]:
    result = hwcaps_fs(*args, "--json")
    assert result.returncode in (0, 1), result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["schema"] == SCHEMA
    return data


@pytest.fixture
def store(tmp_path: Path, binaries: Path) -> Path:
    return variant_store(binaries, tmp_path / "store", "bin/prog")


def test_levels_fields_are_documented() -> None:
    data = output("levels", "--level", "baseline")
    assert fields(data) <= documented("`levels --json`")
    states = {level["name"]: level for level in data["levels"]}
    assert all(not level["searched"] for level in states.values())
    supported = [level for level in states.values() if level["supported"]]
    assert all(level["capped_by"] == "--level" for level in supported)
    assert all(level["forced_by"] is None for level in states.values())


def test_a_forced_level_says_so() -> None:
    data = output("levels", "--force-level", "x86-64-v4")
    top = data["levels"][0]
    assert (top["name"], top["searched"]) == ("x86-64-v4", True)
    assert top["forced_by"] == (None if top["supported"] else "--force-level")


def test_which_and_check_fields_are_documented(store: Path) -> None:
    which = output("which", "--level", "x86-64-v2", str(store), "bin/prog")
    assert fields(which) <= documented("`which --json")
    check = output("check", str(store))
    (store / "glibc-hwcaps/x86-64-v3/bin/orphan").write_text("#!/bin/sh\n")
    check = output("check", str(store))
    assert check["findings"], "the orphan variant is a finding"
    assert fields(check) <= documented("`check --json")


def test_every_skip_has_a_documented_name(store: Path) -> None:
    supported = {state["name"] for state in output("levels")["levels"] if state["supported"]}
    if "x86-64-v2" not in supported:
        pytest.skip("this CPU does not support x86-64-v2")
    (store / "glibc-hwcaps/x86-64-v2/bin/prog").chmod(0o644)
    which = output("which", "--level", "x86-64-v2", str(store), "bin/prog")
    whys = {skip["level"]: skip["why"] for skip in which["skipped"]}
    assert whys == {"x86-64-v2": "not_executable",
                    **{level: "capped" if level in supported else "not_supported"
                       for level in ("x86-64-v3", "x86-64-v4")}}
    text = DOC.read_text()
    section = text[text.index("The names `skipped[].why` takes"):]
    rows = section[section.index("|---|"):].split("\n\n")[0].splitlines()[1:]
    assert {re.findall(r"`(\w+)`", row)[0] for row in rows} == set(WHY)
