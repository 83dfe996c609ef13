"""vlexplain.models."""
