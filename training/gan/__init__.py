"""Conditional BEGAN-CS (paper section 4): networks, losses, data, training loop, checkpoints, evaluation.

Entry points: ``surrogate train gan`` (``training.gan.cli``), ``surrogate evaluate gan``
(``training.gan.evaluate``), ``training.gan.checkpoint.load_generator``. See docs/gan.md.
"""
