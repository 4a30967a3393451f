"""mserve optimizer."""
