"""The conditional BEGAN-CS losses, exactly as paper section 4 (with the issue's choices).

L(v)     = mean |v - D(v)|            (L1; "l2" gives mean (v - D(v))^2 like upstream BEGAN-CS)
L_C      = mean |z - Enc(G(z|y))|     (in L_D only, weight alpha)
L_D      = L(x) - k_t L(G(z|y)) + alpha L_C + MSE(y, y_hat(x))
L_G      = L(G(z|y)) + MSE(y, y_hat(G(z|y)))
k_{t+1}  = clip(k_t + lambda_k (gamma L(x) - L(G(z|y))), 0, 1)
M_global = L(x) + |gamma L(x) - L(G(z|y))|
L_MS     = 1 / (mean |G(z1|y) - G(z2|y)| / mean |z1 - z2| + eps)   (optional, not in the paper: MSGAN's
           mode-seeking term, added to L_G with weight loss.mode_seeking; docs/gan.md, finding 10; the
           trainer compares the images blurred and mean-removed, GanTrainer.mode_seeking_term)
Every term is a separate function so each has its own hand-computed unit test (the trainer's view of
the images for L_MS has its own test).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


def reconstruction_loss(v: torch.Tensor, reconstruction: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L(v): mean per-pixel reconstruction error of the auto-encoder discriminator."""
    diff = v.float() - reconstruction.float()
    if kind == "l1":
        return diff.abs().mean()
    if kind == "l2":
        return diff.pow(2).mean()
    raise ValueError(f"unknown reconstruction loss {kind!r}; use 'l1' or 'l2'")


def constraint_loss(z: torch.Tensor, encoded_fake: torch.Tensor) -> torch.Tensor:
    """BEGAN-CS L_C: mean |z - Enc(G(z|y))| (upstream's form of ||z_D - Enc(G(z_D))||)."""
    return (z.float() - encoded_fake.float()).abs().mean()


def label_loss(y: torch.Tensor, y_hat: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the requested (normalised) labels and the auxiliary predictor's.

    ``weights`` (one per attribute, mean 1) turn it into a per-attribute weighted mean squared error.
    """
    if weights is None:
        return F.mse_loss(y_hat.float(), y.float())
    return ((y_hat.float() - y.float()).pow(2) * weights.float()).mean()


def mode_seeking_loss(
    fake_a: torch.Tensor, fake_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019): 1 / (image distance / noise distance + eps).

    ``fake_a[i]`` and ``fake_b[i]`` share their attributes and differ in z. Minimising it rewards a
    generator whose output moves with z; it is steep near collapse (distance -> 0) and flattens as the
    samples spread, so it cannot dominate a generator that already varies."""
    image_distance = (fake_a.float() - fake_b.float()).abs().mean()
    noise_distance = (z_a.float() - z_b.float()).abs().mean()
    return 1.0 / (image_distance / noise_distance + eps)


def standardising_weights(labels: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """1 / variance of each attribute column (floored), scaled to mean 1."""
    inverse = 1.0 / labels.float().var(dim=0, unbiased=False).clamp_min(floor)
    return inverse / inverse.mean()


def boosted_weights(
    weights: torch.Tensor | None, boosts: dict[str, float], names: list[str] | tuple[str, ...]
) -> torch.Tensor | None:
    """The label weights with some attributes' multiplied (loss.label_boost_g); ``weights`` None = all 1.

    Not renormalised: a boost adds that attribute's say without taking any from the others."""
    if not boosts:
        return weights
    unknown = sorted(set(boosts) - set(names))
    if unknown:
        raise ValueError(f"loss.label_boost_g names {unknown}, not attributes of the data ({', '.join(names)})")
    factors = torch.tensor([boosts.get(name, 1.0) for name in names])
    base = weights if weights is not None else torch.ones(len(names))
    return base * factors.to(base.device)


def discriminator_loss(
    loss_real: torch.Tensor,
    loss_fake: torch.Tensor,
    k_t: torch.Tensor | float,
    constraint: torch.Tensor,
    label_real: torch.Tensor,
    alpha: float,
    label_weight: float = 1.0,
) -> torch.Tensor:
    """L_D = L(x) - k_t L(G) + alpha L_C + MSE(y, y_hat(x))."""
    return loss_real - k_t * loss_fake + alpha * constraint + label_weight * label_real


def generator_loss(
    loss_fake: torch.Tensor,
    label_fake: torch.Tensor,
    label_weight: float = 1.0,
    mode_seeking: torch.Tensor | float = 0.0,
    mode_seeking_weight: float = 0.0,
) -> torch.Tensor:
    """L_G = L(G(z|y)) + MSE(y, y_hat(G(z|y))) (+ the optional mode-seeking term L_MS)."""
    return loss_fake + label_weight * label_fake + mode_seeking_weight * mode_seeking


def update_k(
    k_t: torch.Tensor, loss_real: torch.Tensor, loss_fake: torch.Tensor, gamma: float, lambda_k: float
) -> torch.Tensor:
    """Proportional control of the equilibrium: k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G)), 0, 1).

    Stays a tensor on the training device so the GPU never waits for a host sync every step.
    """
    return (k_t + lambda_k * (gamma * loss_real.detach() - loss_fake.detach())).clamp(0.0, 1.0)


def convergence_measure(loss_real: torch.Tensor, loss_fake: torch.Tensor, gamma: float) -> torch.Tensor:
    """BEGAN's M_global = L(x) + |gamma L(x) - L(G)| (lower is better)."""
    return loss_real.detach() + (gamma * loss_real.detach() - loss_fake.detach()).abs()


@dataclass
class StepLosses:
    """Detached per-step values for logging (tensors until someone asks for floats)."""

    loss_d: torch.Tensor
    loss_g: torch.Tensor
    loss_real: torch.Tensor
    loss_fake: torch.Tensor
    constraint: torch.Tensor
    label_real: torch.Tensor
    label_fake: torch.Tensor
    k_t: torch.Tensor
    m_global: torch.Tensor
    mode_seeking: torch.Tensor  # L_MS's value (0 when loss.mode_seeking is 0)

    def as_floats(self) -> dict[str, float]:
        values = torch.stack([v.detach().float().reshape(()) for v in vars(self).values()]).cpu().tolist()
        return dict(zip(vars(self).keys(), values, strict=True))
