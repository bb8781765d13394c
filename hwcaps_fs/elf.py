"""What hwcaps-fs needs to know about an ELF file: its class, byte order, machine and x86 ISA
level marker. INTERFACE DRAFT — being implemented."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ElfFacts:
    """``elf_class`` is 32 or 64; ``machine`` the ``e_machine`` number; ``isa_needed`` the
    ``GNU_PROPERTY_X86_ISA_1_NEEDED`` bits, or None when the file has no such note."""

    elf_class: int
    little_endian: bool
    machine: int
    isa_needed: int | None


class ElfError(ValueError):
    """The file starts like ELF but is truncated or malformed."""
