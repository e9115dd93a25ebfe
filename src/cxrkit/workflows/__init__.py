"""Workflows: a run folder in, files out (evaluate, triage, explain, localize, predict, compare, ...)."""
