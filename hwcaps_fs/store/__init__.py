"""The store on disk: descriptors beneath ROOT, reading files, scanning, following changes."""
