"""Exponential moving average of the generator's weights (StyleGAN2-ADA's G_ema).

BEGAN's generator circles its equilibrium with the discriminator: consecutive snapshots of one run
trade one attribute's fidelity for another's. Averaging the weights over the last few tens of thousands
of images keeps what they agree on (docs/gan.md, finding 7), at the cost of one weight copy and one
in-place lerp per step.
"""

from __future__ import annotations

import copy

import torch


def ema_beta(batch_size: int, images_seen: int, half_life_kimg: float, rampup: float) -> float:
    """Decay per step so that an update's weight halves every ``half_life_kimg`` thousand images; while
    fewer than half_life / rampup images have been seen, the half-life is ``rampup`` x images seen."""
    half_life = half_life_kimg * 1000.0
    if rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch_size / half_life)


def averaged_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``module`` in eval mode, to be moved towards it by ``update_ema``."""
    average = copy.deepcopy(module).eval()
    average.requires_grad_(False)
    return average


@torch.no_grad()
def update_ema(average: torch.nn.Module, module: torch.nn.Module, beta: float) -> None:
    """average <- beta * average + (1 - beta) * module for parameters; buffers are copied."""
    params = list(average.parameters())
    torch._foreach_lerp_(params, [p.detach() for p in module.parameters()], 1.0 - beta)
    for mine, theirs in zip(average.buffers(), module.buffers(), strict=True):
        mine.copy_(theirs)


def average_snapshots(payloads: list[tuple[str, dict]]) -> dict:
    """One generator whose weights are the mean of several snapshots' of one run (the post-hoc twin of the
    moving average, for runs trained without ``train.ema_kimg``). ``payloads`` = (name, snapshot payload)
    oldest first; all must share the model config and the attribute schema (ValueError names the odd one)."""
    if len(payloads) < 2:
        raise ValueError(f"averaging needs at least two snapshots, got {len(payloads)}")
    first_name, first = payloads[0]
    for name, payload in payloads[1:]:
        if payload["config"].get("model") != first["config"].get("model"):
            raise ValueError(f"{name}: model config differs from {first_name}'s; snapshots of one run only")
        if payload["schema"] != first["schema"]:
            raise ValueError(f"{name}: attribute schema differs from {first_name}'s")
    states = [payload["generator"] for _, payload in payloads]
    averaged = {
        key: (sum(state[key].double() for state in states) / len(states)).to(states[-1][key].dtype)
        for key in states[-1]
    }
    steps = [int(payload.get("step", 0)) for _, payload in payloads]
    last = payloads[-1][1]
    return {
        "config": last["config"],
        "schema": last["schema"],
        "generator": averaged,
        "step": steps[-1],
        "k_t": last.get("k_t", 0.0),
        "weights": f"average of {len(states)} snapshots, steps {', '.join(str(s) for s in steps)}",
        "averaged_steps": steps,
    }


def mixing_notes(payloads: list[tuple[str, dict]]) -> list[str]:
    """What an average mixes that the caller may not have meant: raw with already averaged weights (a run
    that gained train.ema_kimg on resume), or stages with another seed or dataset (legitimate for a
    run continued on new data, so a note, not an error)."""
    notes = []
    kinds = sorted({str(payload.get("weights", "raw")) for _, payload in payloads})
    if len(kinds) > 1:
        notes.append(f"the snapshots hold different kinds of weights ({', '.join(kinds)})")
    for key in ("data.path", "train.seed"):
        section, name = key.split(".")
        values = sorted({str(payload["config"].get(section, {}).get(name)) for _, payload in payloads})
        if len(values) > 1:
            notes.append(f"the snapshots were trained with different {key} ({', '.join(values)})")
    return notes
