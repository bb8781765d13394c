"""Pure decisions, no I/O and no FUSE: level tables, ELF facts, the access rule, the store model,
resolution, mount options and the view model."""
