"""What hwcaps-fs needs to know about an ELF file: its class, byte order, machine and x86 ISA
level marker.

Only the ELF header, the program headers and one note segment are read, the way the kernel and
the dynamic loader see the file (sections are a link-time notion and may be stripped). The ISA
marker is parsed with the rules of glibc's loader (``_dl_process_property_note``, see
docs/levels.md), so that a note glibc would ignore is ignored here too: hwcaps-fs must
predict what ``ld.so`` will do with the file, not what ``readelf`` prints.

Two entry points share one parser: :func:`read_elf_facts` for bytes already in memory and
:func:`read_elf_facts_fd` for an open file, which reads only the few hundred bytes it needs
with ``pread`` (a store scan opens every candidate, so reading whole binaries is not an option).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hwcaps_fs.core.levels import ARCHITECTURES

ELF_MAGIC = b"\x7fELF"
EI_CLASS = 4
EI_DATA = 5

ELFDATA2LSB = 1
ELFDATA2MSB = 2
#: ``e_ident[EI_DATA]`` → little endian?
BYTE_ORDERS: dict[int, bool] = {ELFDATA2LSB: True, ELFDATA2MSB: False}

PT_NOTE = 4
PT_GNU_PROPERTY = 0x6474E553
NT_GNU_PROPERTY_TYPE_0 = 5
GNU_NOTE_NAME = b"GNU\0"
GNU_PROPERTY_X86_ISA_1_NEEDED = 0xC0008002

#: The kernel refuses executables whose program header table is larger than this
#: (``fs/binfmt_elf.c``: ``e_phnum > 65536U / sizeof(struct elf_phdr)``).
MAX_PHDR_TABLE = 65536

#: ``e_machine`` values of other machines a Linux distribution may meet, named for messages (the
#: architectures of :mod:`hwcaps_fs.core.levels` name their own).
OTHER_MACHINES: dict[int, str] = {2: "sparc", 8: "mips", 20: "ppc", 43: "sparc64"}


def machine_name(e_machine: int) -> str:
    """An ELF ``e_machine`` as the tables call it, with the number for an unknown one."""
    for arch in ARCHITECTURES:
        if arch.e_machine == e_machine:
            return arch.name
    return OTHER_MACHINES.get(e_machine, f"machine {e_machine}")


@dataclass(frozen=True, slots=True)
class ElfClassLayout:
    """Where the fields hwcaps-fs reads sit in one ELF class.

    ``header`` unpacks (e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags,
    e_ehsize, e_phentsize, e_phnum) after ``e_ident``; ``phdr`` unpacks a program header and
    ``phdr_fields`` names the positions of p_type, p_offset, p_filesz and p_align in it (the two
    classes order them differently). ``note_align`` is the alignment glibc demands of the GNU
    property note, which is also the size of a property's padding unit.
    """

    bits: int
    header: str
    phdr: str
    phdr_fields: tuple[int, int, int, int]
    note_align: int


ELF_CLASSES: dict[int, ElfClassLayout] = {
    1: ElfClassLayout(32, "HHIIIIIHHH", "IIIIIIII", (0, 1, 4, 7), 4),
    2: ElfClassLayout(64, "HHIQQQIHHH", "IIQQQQQQ", (0, 2, 5, 7), 8),
}

E_IDENT_SIZE = 16


@dataclass(frozen=True, slots=True)
class ElfFacts:
    """``elf_class`` is 32 or 64; ``machine`` the ``e_machine`` number; ``isa_needed`` the
    ``GNU_PROPERTY_X86_ISA_1_NEEDED`` bits, or None when the file has no such note."""

    elf_class: int
    little_endian: bool
    machine: int
    isa_needed: int | None


class ElfError(ValueError):
    """The file starts like ELF but is truncated or malformed."""


#: Reads ``size`` bytes at ``offset``; may return fewer at the end of the file.
Reader = Callable[[int, int], bytes]


def read_elf_facts(data: bytes) -> ElfFacts | None:
    """The facts of the ELF image ``data``; None when it is not ELF; :class:`ElfError` when it
    starts with the ELF magic but is truncated or malformed."""
    return _parse(lambda offset, size: data[offset : offset + size])


def read_elf_facts_fd(fd: int) -> ElfFacts | None:
    """Like :func:`read_elf_facts` for an open file, read with ``pread`` (the file offset is
    left alone, so the fd can be shared)."""
    return _parse(lambda offset, size: os.pread(fd, size, offset))


def _read_exact(read: Reader, offset: int, size: int, what: str) -> bytes:
    chunk = read(offset, size)
    if len(chunk) != size:
        raise ElfError(f"truncated ELF file: {what} at offset {offset} is cut short")
    return chunk


def _parse(read: Reader) -> ElfFacts | None:
    ident = read(0, E_IDENT_SIZE)
    if not ident.startswith(ELF_MAGIC):
        return None
    if len(ident) < E_IDENT_SIZE:
        raise ElfError("truncated ELF file: the identification bytes are cut short")
    layout = ELF_CLASSES.get(ident[EI_CLASS])
    little_endian = BYTE_ORDERS.get(ident[EI_DATA])
    if layout is None:
        raise ElfError(f"unknown ELF class {ident[EI_CLASS]}")
    if little_endian is None:
        raise ElfError(f"unknown ELF byte order {ident[EI_DATA]}")
    order = "<" if little_endian else ">"
    header = struct.Struct(order + layout.header)
    fields = header.unpack(_read_exact(read, E_IDENT_SIZE, header.size, "the ELF header"))
    machine, phoff, phentsize, phnum = fields[1], fields[4], fields[8], fields[9]
    facts = ElfFacts(layout.bits, little_endian, machine, None)
    if phnum == 0:
        return facts
    phdr = struct.Struct(order + layout.phdr)
    if phentsize != phdr.size:
        raise ElfError(f"program header size {phentsize}, expected {phdr.size}")
    if phnum * phdr.size > MAX_PHDR_TABLE:
        raise ElfError(f"too many program headers ({phnum})")
    table = _read_exact(read, phoff, phnum * phdr.size, "the program header table")
    i_type, i_offset, i_filesz, i_align = layout.phdr_fields
    notes: dict[int, list[tuple[int, int, int]]] = {PT_GNU_PROPERTY: [], PT_NOTE: []}
    for values in phdr.iter_unpack(table):
        if values[i_type] in notes:
            notes[values[i_type]].append((values[i_offset], values[i_filesz], values[i_align]))
    # glibc takes PT_GNU_PROPERTY when there is one, else the first PT_NOTE that holds a GNU
    # property note decides (later ones are not looked at).
    for offset, filesz, align in notes[PT_GNU_PROPERTY] or notes[PT_NOTE]:
        segment = _read_exact(read, offset, filesz, "a note segment")
        found, isa = _isa_needed(segment, align, layout.note_align, order)
        if found:
            return ElfFacts(layout.bits, little_endian, machine, isa)
    return facts


def _notes(segment: bytes, align: int, order: str) -> Iterator[tuple[int, bytes, bytes]]:
    """(n_type, name, desc) of each note that fits in ``segment``, stepped over as glibc's
    ``ELF_NOTE_NEXT_OFFSET`` does (name and descriptor padded to the segment's alignment)."""
    nhdr = struct.Struct(order + "III")
    offset = 0
    while offset + nhdr.size <= len(segment):
        namesz, descsz, ntype = nhdr.unpack_from(segment, offset)
        name_at = offset + nhdr.size
        desc_at = offset + _align_up(nhdr.size + namesz, align)
        end = desc_at + descsz
        if end > len(segment):
            return
        yield ntype, segment[name_at : name_at + namesz], segment[desc_at:end]
        offset = desc_at + _align_up(descsz, align)


def _isa_needed(segment: bytes, align: int, note_align: int, order: str) -> tuple[bool, int | None]:
    """Whether the segment holds a GNU property note, and the ISA_1_NEEDED bits glibc takes
    from it (None when it has none or glibc would reject the note).

    The rules are glibc's: a segment with the wrong alignment is skipped; only the first
    NT_GNU_PROPERTY_TYPE_0 note counts; its size must be a multiple of the address size; the
    properties must ascend; ISA_1_NEEDED must carry exactly 4 bytes; a type above it ends the
    search, since nothing further can be it.
    """
    if align != note_align:
        return False, None
    prop = struct.Struct(order + "II")
    value = struct.Struct(order + "I")
    for ntype, name, desc in _notes(segment, align, order):
        if ntype != NT_GNU_PROPERTY_TYPE_0 or name != GNU_NOTE_NAME:
            continue
        if len(desc) < prop.size or len(desc) % note_align:
            return True, None
        offset, last_type = 0, 0
        while len(desc) - offset >= prop.size:
            pr_type, datasz = prop.unpack_from(desc, offset)
            offset += prop.size
            if pr_type < last_type or offset + datasz > len(desc):
                return True, None
            last_type = pr_type
            if pr_type == GNU_PROPERTY_X86_ISA_1_NEEDED:
                if datasz != value.size:
                    return True, None
                return True, int(value.unpack_from(desc, offset)[0])
            if pr_type > GNU_PROPERTY_X86_ISA_1_NEEDED:
                break
            offset += _align_up(datasz, note_align)
        return True, None
    return False, None


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)
