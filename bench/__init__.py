"""Easel benchmarks: `make bench` (or `python -m bench`) prints a table and writes JSON."""
