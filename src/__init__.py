"""Smoothie: label-free routing among language-model generations (Guha et al., NeurIPS 2024)."""
