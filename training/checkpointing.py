"""Self-contained torch checkpoints, written atomically and read back with errors that name the file.

Both trainings (GAN and reconstruction network) keep everything needed to resume or to use a model in one
``torch.save``'d dict. Writing goes through ``surrogate.imageio.atomic_open``, so a run killed mid-write
never leaves a torn ``last.pt``: the file is always the previous or the new complete checkpoint. Each kind
of checkpoint carries a tag (``CheckpointFormat``) at the top of its dict, checked on load, so handing one
model's file to the other's loader is a clear error rather than a ``KeyError`` deep in ``load_state_dict``.
The tags are part of the on-disk format: existing files must keep loading, so never change their keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from surrogate.imageio import atomic_open


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of the expected kind (the message names the file)."""


@dataclass(frozen=True)
class CheckpointFormat:
    """The tag a kind of checkpoint carries: ``{key: tag}`` (plus ``"version": version`` when versioned)."""

    key: str  # dict entry holding the tag, e.g. "format" or "kind"
    tag: str  # e.g. "surrogate-faces/began-cs/1"
    description: str  # for messages: "not a <description>"
    version: int | None = None  # newest version this code reads; also written into new files

    def header(self) -> dict[str, Any]:
        header: dict[str, Any] = {self.key: self.tag}
        if self.version is not None:
            header["version"] = self.version
        return header


def save_checkpoint(path: str | Path, payload: dict[str, Any], format_tag: CheckpointFormat) -> None:
    """``torch.save`` the tag header, then ``payload``, atomically (a payload key never overrides the tag)."""
    header = format_tag.header()
    with atomic_open(path, "wb") as handle:
        torch.save({**header, **{k: v for k, v in payload.items() if k not in header}}, handle)


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    format_tag: CheckpointFormat | None = None,
    error_type: type[Exception] = CheckpointError,
) -> dict[str, Any]:
    """The checkpoint dict, on ``device``; missing, corrupt or foreign files raise ``error_type`` naming the file.

    ``format_tag`` None accepts any dict (for tools that inspect checkpoints of either kind).
    """
    path = Path(path)
    if not path.is_file():
        raise error_type(f"{path}: checkpoint file not found")
    try:
        # weights_only=False: our files carry numpy/python RNG states and config dicts. Only load checkpoints
        # you made yourself; unpickling an untrusted file can run code.
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise error_type(f"{path}: not a readable torch checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict):
        raise error_type(f"{path}: not a checkpoint dict (found {type(payload).__name__})")
    if format_tag is None:
        return payload
    found = payload.get(format_tag.key)
    if found != format_tag.tag:
        raise error_type(f"{path}: not a {format_tag.description} ({format_tag.key} {found!r}, "
                         f"expected {format_tag.tag!r})")
    if format_tag.version is not None:
        version = payload.get("version", 0)
        if not isinstance(version, int) or version > format_tag.version:
            raise error_type(f"{path}: checkpoint version {version!r} is newer than this code reads "
                             f"({format_tag.version})")
    return payload


__all__ = ["CheckpointError", "CheckpointFormat", "load_checkpoint", "save_checkpoint"]
