"""Self-contained checkpoints of the reconstruction network, written atomically.

A checkpoint holds everything needed to rebuild the network without the config file (config, schema
JSON, identity dimension, lighting ranges) and, for training checkpoints, everything needed to resume
exactly (optimiser, scheduler, step, data-stream position, RNG states, metric history). ``export_weights``
writes a weights-only file (a few MB) for the model repository and the attribute extractor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from surrogate.schema import AttributeSchema
from training import checkpointing
from training.checkpointing import CheckpointFormat
from training.recon.config import config_from_dict
from training.recon.networks import ReconNet

CHECKPOINT_KIND = "surrogate-faces/recon"
CHECKPOINT_VERSION = 1
_FORMAT = CheckpointFormat(key="kind", tag=CHECKPOINT_KIND, description="reconstruction-network checkpoint",
                           version=CHECKPOINT_VERSION)


class CheckpointError(checkpointing.CheckpointError):
    """A file that is not a usable reconstruction-network checkpoint."""


def build_network(config: dict[str, Any], n_identity: int, lighting_low, lighting_high) -> ReconNet:
    model = config["model"]
    return ReconNet(
        len(config["attributes"]),
        n_identity,
        image_size=int(model["image_size"]),
        channels=int(model["channels"]),
        width=float(model["width"]),
        head_features=int(model["head_features"]),
        dropout=float(model["dropout"]),
        lighting_low=lighting_low,
        lighting_high=lighting_high,
    )


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save ``state`` (plus kind/version tags) atomically."""
    checkpointing.save_checkpoint(path, state, _FORMAT)


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    return checkpointing.load_checkpoint(path, device, _FORMAT, CheckpointError)


def network_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> ReconNet:
    net = build_network(state["config"], int(state["n_identity"]), state["lighting_low"], state["lighting_high"])
    net.load_state_dict(state["model"])
    return net.to(device).eval()


def load_reconnet(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ReconNet, AttributeSchema, dict[str, Any]]:
    """Contract 5: (ReconNet in eval mode, its AttributeSchema, its config dict)."""
    state = read_checkpoint(path, device)
    schema = AttributeSchema.from_json(state["schema"])
    config = dict(state["config"])
    config.setdefault("image_size", config["model"]["image_size"])
    config.setdefault("channels", config["model"]["channels"])
    return network_from_state(state, device), schema, config


def export_weights(state: dict[str, Any], path: str | Path) -> None:
    """Write a weights-only checkpoint (no optimiser): what the model repository and extractor need."""
    keep = ("config", "schema", "n_identity", "lighting_low", "lighting_high", "step", "metrics_summary", "command")
    model = {k: v.detach().cpu() for k, v in state["model"].items()}
    save_checkpoint(path, {**{k: state[k] for k in keep if k in state}, "model": model})


def check_config_roundtrip(state: dict[str, Any]) -> None:
    """Fail early if the stored config no longer parses (e.g. a checkpoint from an incompatible version)."""
    try:
        config_from_dict(state["config"], "checkpoint config")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
