"""Benchmark kinds: one module per kind (``shapes``, ``grids``, ``spurious``, ``data``), registered in ``.registry``; ``.base``: what they share."""
