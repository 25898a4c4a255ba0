"""Datasets: the task registry, config loading, sources (hub or local) and split building."""
