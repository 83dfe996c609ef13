"""vlexplain.metrics."""
