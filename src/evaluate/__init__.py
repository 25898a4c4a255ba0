"""Metrics and scoring (SPEC sections 3.5 and 5)."""
