"""Self-contained GAN checkpoints: config, schema, networks, optimisers, k_t, step and every RNG state.

Written with ``torch.save`` into ``surrogate.imageio.atomic_open`` so a killed run never leaves a torn
file: ``last.pt`` is always either the previous or the new complete checkpoint. A checkpoint alone is
enough to resume training or to generate (``load_generator``), with no config file or dataset needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from surrogate.imageio import atomic_open
from surrogate.schema import AttributeSchema
from training.gan.config import config_from_dict
from training.gan.networks import Generator

CHECKPOINT_FORMAT = "surrogate-faces/began-cs/1"


class CheckpointError(ValueError):
    """A file that is not a readable GAN checkpoint (the message names the file)."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        # weights_only=False: our own files carry numpy/python RNG states; never load untrusted checkpoints.
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt/foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a surrogate-faces BEGAN-CS checkpoint")
    return payload


def load_generator(path: str | Path, device: str = "cpu") -> tuple[Generator, AttributeSchema, dict[str, Any]]:
    """(Generator in eval mode, its attribute schema, the run's config dict) from a checkpoint."""
    payload = load_checkpoint(path, device)
    config = config_from_dict(payload["config"])
    schema = AttributeSchema.from_json(payload["schema"])
    generator = Generator(config.model, len(schema))
    generator.load_state_dict(payload["generator"])
    generator.to(device).eval()
    info = dict(payload["config"])
    info["step"] = payload.get("step", 0)
    info["k_t"] = payload.get("k_t", 0.0)
    return generator, schema, info
