"""export package of surrogate-faces."""
