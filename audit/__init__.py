"""Privacy and fidelity audit of surrogate faces (issue 9).

Measures, with models nobody on this project wrote, whether a surrogate carries the source face's
attributes and nothing else: identity re-identification (dlib descriptors), memorisation of training
images, attribute recovery and emotion-label transfer (the ``fer`` classifier). Run it with
``surrogate audit --config configs/audit/full.toml``; see docs/audit.md.
"""
