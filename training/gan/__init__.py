"""Conditional BEGAN-CS (paper section 4): networks, losses, data, training loop, checkpoints, evaluation.

Entry points: ``surrogate train gan`` and ``surrogate evaluate gan`` (``training.train_cli``,
``training.evaluate_cli``), ``training.gan.checkpoint.load_generator``. See docs/gan.md.
"""
