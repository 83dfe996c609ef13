"""The torch thread count the suite runs with (conftest sets it and restores it after each test)."""

from __future__ import annotations

import os

#: one thread per xdist worker (``-n 2`` on two cores would otherwise run four threads and
#: thrash); a single process may use two
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1))
