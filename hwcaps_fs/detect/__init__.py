"""CPU level detection: the loader, /proc/cpuinfo and the aux vector, archspec, overrides."""
