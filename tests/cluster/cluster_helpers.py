"""What only the cluster tier needs beside tests.support: its test image and its polling pace."""

from __future__ import annotations

import subprocess
from functools import partial

from tests.support import polling

TEST_IMAGE = "mserve.local/cluster-test:1"

# kubectl's failures and half-written objects count as "not yet" while a cluster converges.
wait_until = partial(
    polling.wait_until,
    timeout=120,
    interval=1.0,
    transient=(AssertionError, subprocess.SubprocessError, ValueError, KeyError),
)
