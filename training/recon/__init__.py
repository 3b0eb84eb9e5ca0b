"""The 3-D reconstruction network: face image -> face-model parameters (pose, AUs, gender, identity, light).

Trained only on renders of the project's own face model (``surrogate.render``) under strong domain
randomisation; used as the attribute extractor (``surrogate attributes extract``) and as the independent
attribute estimator of the GAN evaluation. Its regressed identity is never used to render a surrogate.
"""
