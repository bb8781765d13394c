"""ELF facts: real gcc output for the common cases, hand-built images for glibc's edge rules."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hwcaps_fs.core.elf import (
    GNU_PROPERTY_X86_ISA_1_NEEDED,
    PT_GNU_PROPERTY,
    PT_NOTE,
    ElfError,
    ElfFacts,
    read_elf_facts,
    read_elf_facts_fd,
)
from tests import elf_images as img
from tests.builders import compile_level


def facts_of(path: Path) -> ElfFacts | None:
    """Both entry points, which must agree."""
    fd = os.open(path, os.O_RDONLY)
    try:
        from_fd = read_elf_facts_fd(fd)
    finally:
        os.close(fd)
    assert read_elf_facts(path.read_bytes()) == from_fd
    return from_fd


@pytest.mark.parametrize(
    ("level", "mark", "bits"),
    [
        ("baseline", None, 0x1),  # Debian's crt objects mark the baseline
        ("x86-64-v2", "mneeded", 0x3),
        ("x86-64-v3", "mneeded", 0x7),
        ("x86-64-v4", "mneeded", 0xF),
        ("x86-64-v2", "z", 0x3),
        ("x86-64-v3", "z", 0x5),  # ld ORs one bit into crt's baseline
        ("x86-64-v4", "z", 0x9),
    ],
)
def test_gcc_marks(binaries: Path, level: str, mark: str | None, bits: int) -> None:
    assert facts_of(compile_level(binaries, level, mark=mark)) == ElfFacts(64, True, 62, bits)


def test_march_alone_marks_nothing_beyond_baseline(binaries: Path) -> None:
    facts = facts_of(compile_level(binaries, "x86-64-v3"))
    assert facts is not None and facts.isa_needed == 0x1


def test_script_and_short_files_are_not_elf(tmp_path: Path) -> None:
    script = tmp_path / "s"
    script.write_text("#!/bin/sh\necho hi\n")
    assert facts_of(script) is None
    assert read_elf_facts(b"") is None
    assert read_elf_facts(b"\x7fEL") is None


def test_truncated_header_is_an_error(binaries: Path) -> None:
    data = compile_level(binaries, "baseline").read_bytes()
    with pytest.raises(ElfError, match="truncated"):
        read_elf_facts(data[:30])
    with pytest.raises(ElfError, match="truncated"):
        read_elf_facts(data[:10])


def test_truncated_program_headers_are_an_error(binaries: Path) -> None:
    data = compile_level(binaries, "baseline").read_bytes()
    with pytest.raises(ElfError, match="program header"):
        read_elf_facts(data[:80])


def test_bad_class_is_an_error() -> None:
    with pytest.raises(ElfError, match="class"):
        read_elf_facts(b"\x7fELF\x07\x01\x01" + b"\0" * 80)


def test_32bit_gcc(tmp_path: Path) -> None:
    obj, exe = tmp_path / "m.o", tmp_path / "m"
    (tmp_path / "m.c").write_text("int main(void) { return 0; }\n")
    try:
        subprocess.run(["gcc", "-m32", "-c", "-o", str(obj), str(tmp_path / "m.c")],
                       check=True, capture_output=True)
        subprocess.run(["ld", "-m", "elf_i386", "-e", "main", "-z", "x86-64-v2", "-o", str(exe),
                        str(obj)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot build a 32-bit ELF here: {exc}")
    assert facts_of(exe) == ElfFacts(32, True, 3, 0x2)


@pytest.mark.parametrize("machine", [img.X86_64, img.AARCH64, img.S390X, img.I386])
def test_hand_built_classes_and_orders(machine: tuple[int, int, bool]) -> None:
    e_machine, bits, little = machine
    assert read_elf_facts(img.marked(0x7, machine)) == ElfFacts(bits, little, e_machine, 0x7)
    assert read_elf_facts(img.marked(None, machine)) == ElfFacts(bits, little, e_machine, None)


FEATURE_1_AND = 0xC0000002
NEEDED_1 = 0xB0008000
FOUR = b"\1\0\0\0"


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        # another property first, as ld writes IBT/SHSTK before the ISA level
        (((PT_GNU_PROPERTY, img.note(img.properties((FEATURE_1_AND, FOUR), img.isa(5))), 8),), 5),
        # wrong segment alignment: glibc skips the note
        (((PT_GNU_PROPERTY, img.note(img.properties(img.isa(5))), 4),), None),
        # descending property types before the ISA entry
        (((PT_GNU_PROPERTY, img.note(img.properties((FEATURE_1_AND, FOUR), (NEEDED_1, FOUR),
                                                    img.isa(5))), 8),), None),
        # the scan stops at the ISA entry: what follows it is not looked at
        (((PT_GNU_PROPERTY, img.note(img.properties(img.isa(5), (NEEDED_1, FOUR))), 8),), 5),
        # ISA entry with 8 bytes of data
        (((PT_GNU_PROPERTY, img.note(img.properties((GNU_PROPERTY_X86_ISA_1_NEEDED,
                                                       b"\5" + b"\0" * 7))), 8),), None),
        # a type above ISA_1_NEEDED ends the search before a (misordered) later ISA entry
        (((PT_GNU_PROPERTY, img.note(img.properties((0xC0010002, FOUR))), 8),), None),
        # a note named otherwise is not a GNU property note
        (((PT_GNU_PROPERTY, img.note(img.properties(img.isa(5)), name=b"GNV\0"), 8),), None),
        # PT_NOTE only: a build-id note (4-aligned, as in real files) before the property note
        (((PT_NOTE, img.note(b"\xaa" * 20, ntype=3, align=8)
           + img.note(img.properties(img.isa(7))), 8),), 7),
        # PT_GNU_PROPERTY wins over PT_NOTE
        (((PT_NOTE, img.note(img.properties(img.isa(3))), 8),
          (PT_GNU_PROPERTY, img.note(img.properties(img.isa(0xF))), 8)), 0xF),
        # only the first GNU property note counts
        (((PT_NOTE, img.note(img.properties((FEATURE_1_AND, FOUR)))
           + img.note(img.properties(img.isa(0xF))), 8),), None),
    ],
)
def test_glibc_note_rules(segments: tuple[tuple[int, bytes, int], ...],
                          expected: int | None) -> None:
    facts = read_elf_facts(img.elf_image(img.X86_64, segments))
    assert facts is not None and facts.isa_needed == expected


def test_note_segment_beyond_end_of_file_is_an_error() -> None:
    data = img.marked(0x7)
    with pytest.raises(ElfError, match="note segment"):
        read_elf_facts(data[:-12])
