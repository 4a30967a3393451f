"""mserve runtime."""
