"""training package of surrogate-faces."""
