"""Sample grids that make training progress visible.

* probe grid: rows = fixed attribute vectors (from the data), columns = fixed noise vectors. Rows that
  differ show conditioning; columns that differ show that z matters (a row of near-identical faces is
  mode collapse).
* sweep grid: each row sweeps one attribute from its low to its high end (others at the data median),
  with one fixed z, so smile, brows and head turn can be checked against the requested values.
Noise comes from ``surrogate.noise`` so a grid's z equals what the service would use for those seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from surrogate.imageio import image_grid, save_png, to_uint8
from surrogate.noise import z_batch
from surrogate.runtime import to_hwc
from training.gan.networks import Generator, from_began

PROBE_SEED_BASE = 1_000_000


@torch.no_grad()
def generate_uint8(
    generator: Generator,
    z: np.ndarray,
    y_normalised: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Generate images: (N, H, W) or (N, H, W, 3) uint8, in batches, regardless of training mode."""
    was_training = generator.training
    generator.eval()
    out = []
    for start in range(0, len(z), batch_size):
        zt = torch.as_tensor(z[start : start + batch_size], dtype=torch.float32, device=device)
        yt = torch.as_tensor(y_normalised[start : start + batch_size], dtype=torch.float32, device=device)
        images = from_began(generator(zt, yt)).cpu().numpy()
        out.append(to_hwc(images))
    generator.train(was_training)
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


def probe_noise(count: int, z_dim: int) -> np.ndarray:
    return z_batch([PROBE_SEED_BASE + i for i in range(count)], z_dim)


def probe_attributes(y_normalised: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    index = rng.choice(len(y_normalised), size=min(count, len(y_normalised)), replace=False)
    return y_normalised[np.sort(index)]


def sweep_attributes(y_normalised: np.ndarray, steps: int) -> np.ndarray:
    """(A * steps, A): row a sweeps attribute a over [0, 1]; the others stay at the data median."""
    base = np.median(y_normalised, axis=0).astype(np.float32)
    n_attr = y_normalised.shape[1]
    out = np.repeat(base[None], n_attr * steps, axis=0)
    for a in range(n_attr):
        out[a * steps : (a + 1) * steps, a] = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    return out


def probe_grid(
    generator: Generator, probes_y: np.ndarray, probes_z: np.ndarray, *, device: str | torch.device = "cpu"
) -> np.ndarray:
    rows, cols = len(probes_y), len(probes_z)
    y = np.repeat(probes_y, cols, axis=0)
    z = np.tile(probes_z, (rows, 1))
    return image_grid(list(generate_uint8(generator, z, y, device=device)), columns=cols)


def sweep_grid(
    generator: Generator,
    y_normalised: np.ndarray,
    steps: int,
    z: np.ndarray,
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    y = sweep_attributes(y_normalised, steps)
    zs = np.repeat(z[:1], len(y), axis=0)
    return image_grid(list(generate_uint8(generator, zs, y, device=device)), columns=steps)


def save_grids(
    out_dir: Path,
    tag: str,
    generator: Generator,
    probes_y: np.ndarray,
    probes_z: np.ndarray,
    y_all: np.ndarray,
    sweep_steps: int,
    *,
    device: str | torch.device = "cpu",
) -> list[Path]:
    paths = [out_dir / f"probe_{tag}.png", out_dir / f"sweep_{tag}.png"]
    save_png(paths[0], probe_grid(generator, probes_y, probes_z, device=device))
    save_png(paths[1], sweep_grid(generator, y_all, sweep_steps, probes_z, device=device))
    return paths


def real_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """Grid of real (N, C, H, W) uint8 training images, for side-by-side comparison."""
    tiles = [to_uint8(im) for im in images]
    return image_grid(tiles, columns=columns)
