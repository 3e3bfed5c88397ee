"""Benchmarks: the papers' evaluation protocol on the standard test sets, and restore speed."""
