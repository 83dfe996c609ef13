"""vlexplain.concepts."""
