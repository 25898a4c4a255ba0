"""Routing methods other than Smoothie: random, Best-on-Val, labelled kNN, MBR, PairRM.

Each is a function over arrays (generator indices in, generator indices out); the command
modules ``src/<method>.py`` load files and write outputs around them.
"""
