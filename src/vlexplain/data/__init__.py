"""vlexplain.data."""
