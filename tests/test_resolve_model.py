"""Scan + resolve of random real stores against a reference model of a few lines."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.core.resolve import Target, resolve_store
from hwcaps_fs.store.scan import scan
from tests import elf_images as img

TREES: tuple[str | None, ...] = (None, *X86_64.level_names)
NAMES = ("a", "b", "sub/a", "sub/deeper/c")
ISA_NOTES = (None, 0x1, 0x3, 0x7, 0xF)


@st.composite
def files(draw: st.DrawFn) -> dict[tuple[str | None, str], tuple[bool, bool, int | None]]:
    """(tree, name) -> (executable, trusted, ISA note or None for a script)."""
    chosen = draw(st.sets(st.tuples(st.sampled_from(TREES), st.sampled_from(NAMES)), max_size=10))
    return {key: (draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from(ISA_NOTES)))
            for key in sorted(chosen, key=str)}


def write_store(root: Path, spec: dict[tuple[str | None, str], tuple[bool, bool, int | None]]
                ) -> None:
    for (tree, name), (executable, trusted, note) in spec.items():
        path = root / (f"glibc-hwcaps/{tree}/{name}" if tree else name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"#!/bin/sh\n" if note is None else img.marked(note))
        path.chmod((0o755 if executable else 0o644) | (0 if trusted else 0o020))


def model(spec: dict[tuple[str | None, str], tuple[bool, bool, int | None]], name: str,
          target: Target) -> tuple[str | None] | None:
    """glibc's search, stated as plainly as possible: (tree served,) or None.

    Variants must be runnable here; the baseline is served as it is, only trust applies."""
    for tree in (*target.levels, None):
        if (tree, name) in spec:
            executable, trusted, note = spec[(tree, name)]
            isa_ok = note is None or note & ~(target.isa_bits or 0) == 0
            runnable = tree is None or (executable and isa_ok)
            if runnable and (trusted or not target.require_trusted):
                return (tree,)
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=files(), cpu_rank=st.integers(0, len(X86_64.levels)), strict=st.booleans())
def test_scan_and_resolve_match_the_model(
    spec: dict[tuple[str | None, str], tuple[bool, bool, int | None]], cpu_rank: int,
    strict: bool,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: trust is modelled by group-write on root-owned files")
    cpu = X86_64.level_names[cpu_rank - 1] if cpu_rank else None
    target = Target(X86_64, tuple(reversed(X86_64.level_names[:cpu_rank])),
                    X86_64.isa_bits(cpu or "baseline"), strict)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        write_store(root, spec)
        resolutions = resolve_store(scan(tmp, X86_64), target)
    names = {name for _, name in spec}
    assert set(resolutions) == names
    for name in names:
        served = resolutions[name].served
        assert ((served.level,) if served else None) == model(spec, name, target), name
