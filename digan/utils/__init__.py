"""Shared plumbing: atomic I/O, provenance, progress bars, images, seeding, distributed helpers."""
