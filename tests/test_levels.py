"""The level tables: shapes the detection code relies on."""

from __future__ import annotations

import pytest

from hwcaps_fs.core.levels import (
    ARCHITECTURES,
    X86_64,
    X86_KNOWN_VENDORS,
    X86_MODEL_QUIRKS,
    UnknownLevelError,
    architecture_for_machine,
    baseline_only_architecture,
)


def test_x86_isa_bits_are_one_per_level_in_order() -> None:
    bits = [X86_64.baseline.isa_bit, *(level.isa_bit for level in X86_64.levels)]
    assert bits == [1, 2, 4, 8]


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_feature_names_are_unique_per_architecture(arch: object) -> None:
    from hwcaps_fs.core.levels import Architecture

    assert isinstance(arch, Architecture)
    names = [f.name for level in (arch.baseline, *arch.levels) for f in level.features]
    assert len(names) == len(set(names))
    assert all(arch.rank(name) == i + 1 for i, name in enumerate(arch.level_names))


def test_unknown_level_message_lists_the_known_ones() -> None:
    known = r"known: baseline, x86-64-v2, x86-64-v3, x86-64-v4"
    with pytest.raises(UnknownLevelError, match=known):
        X86_64.level("x86-64-v9")


def test_quirks_name_only_known_vendors_and_table_features() -> None:
    names = {f.name for level in X86_64.levels for f in level.features}
    for quirk in X86_MODEL_QUIRKS:
        assert quirk.vendors <= X86_KNOWN_VENDORS
        assert set(quirk.disabled) <= names


def test_baseline_only_architecture() -> None:
    arch = baseline_only_architecture("sparc64")
    assert arch.level_names == () and arch.rank("baseline") == 0
    assert architecture_for_machine("amd64") is X86_64
