"""The torch thread count the suite runs with (conftest sets it and restores it after each test)."""

from __future__ import annotations

import os

THREADS = max(1, min(2, os.cpu_count() or 1))
