"""The service's side of the model runtime: a backend built from the environment's configuration.

Where the networks run (``embedded`` onnxruntime in this process, or a ``triton`` server) is
``surrogate.runtime``'s business; this module only maps ``ServiceConfig`` onto the runtime's
keyword options, so the runtime never depends on the service. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from service.config import ServiceConfig
from surrogate.runtime import Backend, BackendError, ModelInfo, open_backend

__all__ = ["Backend", "BackendError", "ModelInfo", "backend_options", "create_backend", "photoreal_options"]


def backend_options(config: ServiceConfig) -> dict[str, Any]:
    """The runtime's options for the backend ``config.backend`` names."""
    models = {"repository": config.model_repository, "gan_model": config.gan_model,
              "recon_model": config.recon_model}
    if config.backend == "triton":
        return {**models, "url": config.triton_url, "protocol": config.triton_protocol,
                "timeout_s": config.triton_timeout_s}
    return {**models, "device": config.device}


def create_backend(config: ServiceConfig, **kwargs: Any) -> Backend:
    """The backend the configuration asks for; ``kwargs`` add backend-specific options (``wait_s``)."""
    return open_backend(config.backend, **backend_options(config), **kwargs)


def photoreal_options(config: ServiceConfig) -> dict[str, Any]:
    """``surrogate.synthesis.photoreal_backend``'s options: with the Triton backend, the photoreal method's
    synthesis network runs on the same Triton server (entry ``portrait_synthesis``), the rest in-process."""
    if config.backend == "triton":
        return {"triton_url": config.triton_url, "protocol": config.triton_protocol,
                "timeout_s": config.triton_timeout_s}
    return {}
