"""The project's own Prometheus metrics, exported on ``/metrics`` next to BentoML's.

Plain ``prometheus_client`` collectors (BentoML 1.4 deprecated its ``bentoml.metrics`` wrapper), created
on first use: a BentoML worker sets ``PROMETHEUS_MULTIPROC_DIR`` only after it has imported the service
module, and ``prometheus_client`` fixes its mode when it is first imported, so importing it here at
import time would keep every count out of the multi-process database and off the one ``/metrics`` page
(tests/test_service.py checks they are served). Labels carry only low-cardinality facts (method,
backend, model, reason kind): never an id, a file name, an attribute value or any byte of an image.
"""

from __future__ import annotations

import threading
from typing import Any

_CREATE = threading.Lock()


class _Lazy:
    """A Prometheus collector built (and ``prometheus_client`` imported) on the first ``labels`` call."""

    def __init__(self, kind: str, **kwargs: Any):
        self._kind, self._kwargs = kind, kwargs
        self._collector: Any = None

    def labels(self, *args: Any, **kwargs: Any) -> Any:
        if self._collector is None:
            with _CREATE:  # two threads must not register the same name twice
                if self._collector is None:
                    import prometheus_client

                    self._collector = getattr(prometheus_client, self._kind)(**self._kwargs)
        return self._collector.labels(*args, **kwargs)


def Counter(**kwargs: Any) -> _Lazy:  # noqa: N802 (reads like the prometheus_client class it builds)
    return _Lazy("Counter", **kwargs)


def Histogram(**kwargs: Any) -> _Lazy:  # noqa: N802
    return _Lazy("Histogram", **kwargs)


IMAGES = Counter(
    name="surrogate_images_total",
    documentation="Surrogate images produced, by endpoint, method and backend",
    labelnames=["endpoint", "method", "backend"],
)
BACKEND_LATENCY = Histogram(
    name="surrogate_backend_latency_seconds",
    documentation="Time of one backend call (one adaptive batch) by model and backend",
    labelnames=["model", "backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_ROWS = Histogram(
    name="surrogate_backend_batch_rows",
    documentation="Rows (images) per backend call after adaptive batching, by model",
    labelnames=["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
REQUEST_IMAGES = Histogram(
    name="surrogate_request_images",
    documentation="Images requested per HTTP request, by endpoint",
    labelnames=["endpoint"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
REJECTED = Counter(
    name="surrogate_rejected_inputs_total",
    documentation="Rejected requests, records or images, by endpoint and reason kind",
    labelnames=["endpoint", "reason"],
)
