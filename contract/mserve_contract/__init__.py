"""Data shapes shared by mserve's components (pydantic only, no heavy imports).

The optimizer writes an `OptimizationReport`; the operator reads its summary from the
Job's termination message and its verdict from the exit code (`exit_codes`). One
definition here keeps both sides honest, while the operator still never imports the
optimizer or the runtime.
"""
