"""The project's own Prometheus metrics, exported on ``/metrics`` next to BentoML's.

``bentoml.metrics`` creates the collectors lazily inside BentoML's multi-process registry, so every
worker's counts reach the one ``/metrics`` page. Labels carry only low-cardinality facts (method,
backend, model, reason kind): never an id, a file name, an attribute value or any byte of an image.
"""

from __future__ import annotations

import bentoml

IMAGES = bentoml.metrics.Counter(
    name="surrogate_images_total",
    documentation="Surrogate images produced, by endpoint, method and backend",
    labelnames=["endpoint", "method", "backend"],
)
BACKEND_LATENCY = bentoml.metrics.Histogram(
    name="surrogate_backend_latency_seconds",
    documentation="Time of one backend call (one adaptive batch) by model and backend",
    labelnames=["model", "backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_ROWS = bentoml.metrics.Histogram(
    name="surrogate_backend_batch_rows",
    documentation="Rows (images) per backend call after adaptive batching, by model",
    labelnames=["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
REQUEST_IMAGES = bentoml.metrics.Histogram(
    name="surrogate_request_images",
    documentation="Images requested per HTTP request, by endpoint",
    labelnames=["endpoint"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
REJECTED = bentoml.metrics.Counter(
    name="surrogate_rejected_inputs_total",
    documentation="Rejected requests, records or images, by endpoint and reason kind",
    labelnames=["endpoint", "reason"],
)
