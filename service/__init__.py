"""service package of surrogate-faces."""
