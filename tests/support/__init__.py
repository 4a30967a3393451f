"""What the test tiers and the benchmarks share, imported as `tests.support.<module>`.

The repository root is on `sys.path`: pytest's `pythonpath` option puts it there, and the
benchmarks run as modules from the root (`python -m benchmarks.runtime`).
"""
