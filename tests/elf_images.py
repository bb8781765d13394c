"""Hand-built ELF images, for what gcc on this machine cannot produce: other byte orders,
other machines, and GNU property notes that break one of glibc's rules on purpose."""

from __future__ import annotations

import struct

from hwcaps_fs.core.elf import (
    GNU_PROPERTY_X86_ISA_1_NEEDED,
    NT_GNU_PROPERTY_TYPE_0,
    PT_GNU_PROPERTY,
    PT_NOTE,
)

#: e_machine, class and byte order of a few architectures.
X86_64 = (62, 64, True)
AARCH64 = (183, 64, True)
S390X = (22, 64, False)
I386 = (3, 32, True)


def _pad(data: bytes, align: int) -> bytes:
    return data + b"\0" * (-len(data) % align)


def properties(*props: tuple[int, bytes], align: int = 8, little: bool = True) -> bytes:
    """The descriptor of a GNU property note: (pr_type, pr_data) pairs, each padded."""
    order = "<" if little else ">"
    return b"".join(_pad(struct.pack(order + "II", t, len(d)) + d, align) for t, d in props)


def isa(bits: int, little: bool = True) -> tuple[int, bytes]:
    return GNU_PROPERTY_X86_ISA_1_NEEDED, struct.pack("<I" if little else ">I", bits)


def note(desc: bytes, name: bytes = b"GNU\0", ntype: int = NT_GNU_PROPERTY_TYPE_0,
         align: int = 8, little: bool = True) -> bytes:
    order = "<" if little else ">"
    head = struct.pack(order + "III", len(name), len(desc), ntype)
    return _pad(head + name, align) + _pad(desc, align)


def elf_image(machine: tuple[int, int, bool] = X86_64,
              segments: tuple[tuple[int, bytes, int], ...] = ()) -> bytes:
    """An ELF executable header for ``machine`` with ``segments`` (p_type, payload, p_align)
    as its program headers, payloads placed after the table."""
    e_machine, bits, little = machine
    order = "<" if little else ">"
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1 if little else 2, 1]) + b"\0" * 9
    if bits == 64:
        ehdr, phdr = struct.Struct(order + "HHIQQQIHHHHHH"), struct.Struct(order + "IIQQQQQQ")
    else:
        ehdr, phdr = struct.Struct(order + "HHIIIIIHHHHHH"), struct.Struct(order + "IIIIIIII")
    phoff = 16 + ehdr.size
    offset = phoff + phdr.size * len(segments)
    table, payloads = b"", b""
    for p_type, payload, align in segments:
        start = offset + len(payloads)
        if bits == 64:
            table += phdr.pack(p_type, 4, start, start, start, len(payload), len(payload), align)
        else:
            table += phdr.pack(p_type, start, start, start, len(payload), len(payload), 4, align)
        payloads += _pad(payload, 8)
    header = ehdr.pack(2, e_machine, 1, 0, phoff, 0, 0, 16 + ehdr.size, phdr.size,
                       len(segments), 0, 0, 0)
    return ident + header + table + payloads


def marked(bits: int | None, machine: tuple[int, int, bool] = X86_64) -> bytes:
    """An image whose PT_GNU_PROPERTY says ISA_1_NEEDED = ``bits`` (no note when None)."""
    if bits is None:
        return elf_image(machine)
    align = machine[1] // 8
    desc = properties(isa(bits, machine[2]), align=align, little=machine[2])
    segment = note(desc, align=align, little=machine[2])
    return elf_image(machine, ((PT_NOTE, segment, align), (PT_GNU_PROPERTY, segment, align)))
