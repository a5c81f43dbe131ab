"""Data sets: synthetic ground-truth heads and real-photo folders."""
