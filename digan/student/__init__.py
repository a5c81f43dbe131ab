"""DIGAN student (G3D)."""
