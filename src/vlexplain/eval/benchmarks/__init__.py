"""Benchmark kinds: one module per kind (``shapes``, ``grids``, ``spurious``, ``data``), registered in ``.base``."""
