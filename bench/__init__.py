"""Benchmarks (not tests): each figure is measured beside its baseline in the same run.

`make bench` (or `python -m bench`) runs them all; see bench/__main__.py for the options.
"""
