"""mserve operator."""
