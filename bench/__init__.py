"""Benchmarks of the hub against the raw libraries it wraps (``make bench``).

Each ``bench/<name>.py`` runs alone (``.venv/bin/python -m bench.<name> [--quick]``),
starts its own servers on free ports, stops them, and prints a table of
``metric | figure | baseline | ratio | target | ok?``; ``bench/run.py`` runs them all.
"""
