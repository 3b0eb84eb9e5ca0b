"""Self-contained GAN checkpoints: config, schema, networks, optimisers, k_t, step and every RNG state.

Written atomically by ``training.checkpointing`` so a killed run never leaves a torn file: ``last.pt`` is
always either the previous or the new complete checkpoint. A checkpoint alone is enough to resume
training or to generate (``load_generator``), with no config file or dataset needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from surrogate.schema import AttributeSchema
from training import checkpointing
from training.checkpointing import CheckpointFormat
from training.gan.config import config_from_dict
from training.gan.networks import Generator

CHECKPOINT_FORMAT = "surrogate-faces/began-cs/1"
_FORMAT = CheckpointFormat(key="format", tag=CHECKPOINT_FORMAT, description="surrogate-faces BEGAN-CS checkpoint")


class CheckpointError(checkpointing.CheckpointError):
    """A file that is not a readable GAN checkpoint (the message names the file)."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    checkpointing.save_checkpoint(path, payload, _FORMAT)


GENERATOR_KEYS = ("config", "schema", "generator", "step", "k_t")


def generator_only(payload: dict[str, Any]) -> dict[str, Any]:
    """The part of a training checkpoint that generating and exporting need (no D, optimisers or RNG):
    the averaged generator's weights when the run keeps one, under "generator" (``weights`` says which)."""
    kept = {key: payload[key] for key in GENERATOR_KEYS if key in payload}
    if "generator_ema" in payload:
        kept["generator"] = payload["generator_ema"]
    kept["weights"] = output_weights(payload)
    return kept


OPTIMISER_KEYS = ("opt_g", "opt_d")


def without_optimisers(payload: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint less the Adam moments (about two thirds of it: 7 of 21 MB at n = 32 are
    networks), still resumable: training continues with fresh moments. What the GPU recipe brings back
    for every branch, so that any of them, not only the one whose whole ``last.pt`` fits, can go on."""
    kept = {key: value for key, value in payload.items() if key not in OPTIMISER_KEYS}
    kept["optimisers"] = "dropped"
    return kept


def output_weights(payload: dict[str, Any]) -> str:
    """"ema" when the checkpoint's generator to use is the weight average (train.ema_kimg), else "raw"."""
    return "ema" if "generator_ema" in payload else payload.get("weights", "raw")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    return checkpointing.load_checkpoint(path, device, _FORMAT, CheckpointError)


def load_generator(path: str | Path, device: str = "cpu") -> tuple[Generator, AttributeSchema, dict[str, Any]]:
    """(Generator in eval mode, its attribute schema, the run's config dict) from a checkpoint; the
    averaged generator when the run keeps one (``info["weights"]`` is "ema" then)."""
    payload = load_checkpoint(path, device)
    config = config_from_dict(payload["config"])
    schema = AttributeSchema.from_json(payload["schema"])
    generator = Generator(config.model, len(schema))
    generator.load_state_dict(payload.get("generator_ema", payload["generator"]))
    generator.to(device).eval()
    info = dict(payload["config"])
    info["weights"] = output_weights(payload)
    info["step"] = payload.get("step", 0)
    info["k_t"] = payload.get("k_t", 0.0)
    return generator, schema, info
