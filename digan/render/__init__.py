"""Differentiable mesh renderer."""
