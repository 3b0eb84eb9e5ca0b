"""annotation package of surrogate-faces."""
