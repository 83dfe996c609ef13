"""vlexplain.attribution."""
