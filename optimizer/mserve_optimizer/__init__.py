"""mserve optimizer: convert a model to ONNX, optimize it, and prove it still answers like the original."""

# Part of every artifact's digest: bump it when a change alters what the optimizer writes.
__version__ = "0.1.0"
