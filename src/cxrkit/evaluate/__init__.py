"""Evaluation: pure metric functions on arrays."""
