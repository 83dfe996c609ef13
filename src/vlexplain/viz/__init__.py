"""vlexplain.viz."""
