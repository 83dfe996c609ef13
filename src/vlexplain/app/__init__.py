"""vlexplain.app."""
