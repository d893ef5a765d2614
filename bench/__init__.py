"""Benchmarks of splitter against the physical limit and its peers (numbers, not pass/fail).

`python -m bench` runs them all in one go; see bench/README.md for what each figure means.
"""
