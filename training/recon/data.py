"""Training data for the reconstruction network: faces rendered on the fly, strongly randomised.

There is no labelled face dataset offline, so every training image is a render of the project's own face
model (``surrogate.render``) with known parameters. The network must still work on real photographs and
on imperfect crops, hence domain randomisation in two places:

* in the renderer (CPU, in DataLoader workers): identity, skin tone, lighting, face size and position
  (crop jitter), textured backgrounds;
* on the device, per step (``augment_batch``): contrast, brightness, gamma, blur, low resolution, noise
  and random occluders. Doing these on the GPU keeps the CPU workers free for rendering, and in pool
  mode lets a pooled face be seen under a new augmentation every time it is drawn.

Determinism: the stream is a sequence of *chunks*; chunk ``k`` is drawn from
``default_rng([seed, k])`` whatever the number of workers, so the data of a run depends only on the seed
(and a resumed run continues at the chunk it stopped at).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from surrogate.schema import AttributeSchema
from training.imageops import gaussian_blur
from training.recon.config import AugmentConfig, ConfigError, ReconConfig

LIGHTING_KEYS: tuple[str, ...] = ("light_azimuth", "light_elevation", "light_strength", "ambient")


def lighting_ranges(augment: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Low and high of each lighting parameter (the network's lighting head is normalised to these)."""
    ranges = [augment.light_azimuth, augment.light_elevation, augment.light_strength, augment.ambient]
    return (np.array([r[0] for r in ranges], np.float32), np.array([r[1] for r in ranges], np.float32))


def check_renderer_supports(schema: AttributeSchema) -> None:
    """Every schema AU must be one the face model can show, or the network would learn noise."""
    from surrogate.face_model import SUPPORTED_AUS

    missing = [au for au in schema.action_units if au not in SUPPORTED_AUS]
    if missing:
        raise ConfigError(
            f"attributes: the face model cannot render {', '.join(missing)} (it supports {', '.join(SUPPORTED_AUS)})"
        )


def sample_attributes(rng: np.random.Generator, n: int, schema: AttributeSchema, config: ReconConfig) -> np.ndarray:
    """Attribute values (n x A, natural units) that cover the whole valid range.

    Poses: a mix of uniform over the valid range (so the extremes are learnt) and a normal around
    frontal (where real data concentrates). AUs: exactly 0 with ``neutral_au_probability`` (neutral faces
    are common and must come out as 0), else uniform 0..5. Gender: uniform 0..1 (the face model's
    gender axis is continuous; the schema's value is P(male)).
    """
    if config.data.attribute_distribution == "synth":
        from surrogate import training_data

        sampler = getattr(training_data, "sample_attributes", None)
        if sampler is None:
            raise ConfigError(
                "data.attribute_distribution = 'synth' but surrogate.training_data has no sample_attributes"
            )
        return np.asarray(sampler(rng, n, schema), dtype=np.float32)
    values = np.empty((n, len(schema)), np.float32)
    for i, spec in enumerate(schema.attributes):
        if spec.unit == "degrees":
            uniform = rng.uniform(spec.low, spec.high, n)
            centred = np.clip(rng.normal(0.0, spec.high / 3.0, n), spec.low, spec.high)
            values[:, i] = np.where(rng.random(n) < config.data.pose_uniform_fraction, uniform, centred)
        elif spec.name.startswith("AU"):
            active = rng.random(n) >= config.data.neutral_au_probability
            values[:, i] = np.where(active, rng.uniform(spec.low, spec.high, n), 0.0)
        else:
            values[:, i] = rng.uniform(spec.low, spec.high, n)
    return values


def random_backgrounds(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Smooth random textures, gradients and flat grey levels (uint8, n x size x size)."""
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        kind = rng.integers(0, 3)
        if kind == 0:
            out[i] = rng.integers(0, 256)
        elif kind == 1:
            cells = int(rng.integers(2, 9))
            coarse = rng.uniform(0, 255, (cells, cells)).astype(np.float32)
            smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
            fine = rng.normal(0, rng.uniform(0, 25), (size, size))
            out[i] = np.clip(smooth + fine, 0, 255).astype(np.uint8)
        else:
            angle = rng.uniform(0, 2 * np.pi)
            yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
            ramp = np.cos(angle) * xx + np.sin(angle) * yy
            a, b = rng.uniform(0, 255, 2)
            out[i] = np.clip(a + (b - a) * (ramp + 0.7) / 1.4, 0, 255).astype(np.uint8)
    return out


@dataclass
class RenderedChunk:
    images: np.ndarray  # uint8 (n, C, S, S)
    attributes: np.ndarray  # (n, A) normalised to [0, 1]
    identity: np.ndarray  # (n, N_IDENTITY)
    lighting: np.ndarray  # (n, 4) normalised to [0, 1]
    values: np.ndarray  # (n, A) natural units (for samples and evaluation)


def render_chunk(
    config: ReconConfig, rng: np.random.Generator, n: int, *, randomise_scene: bool = True
) -> RenderedChunk:
    """Sample n faces and render them. ``randomise_scene=False`` gives plain, centred, well-lit faces
    with random identity and skin only (the "clean" held-out set)."""
    from surrogate.face_model import N_IDENTITY, params_from_attributes
    from surrogate.synthesis_3d import render_params

    schema = config.schema
    aug = config.augment
    size = config.render_size
    rgb = config.model.channels == 3
    values = sample_attributes(rng, n, schema, config)
    identity = rng.standard_normal((n, N_IDENTITY)).astype(np.float32)
    low, high = lighting_ranges(aug)
    if randomise_scene:
        lighting = rng.uniform(low, high, (n, 4)).astype(np.float32)
        scale = rng.uniform(1 - aug.scale_jitter, 1 + aug.scale_jitter, n)
        shift = rng.uniform(-aug.shift_jitter, aug.shift_jitter, (n, 2))
    else:
        lighting = np.tile(np.array([0.0, 20.0, 0.7, 0.35], np.float32), (n, 1))
        lighting[:, 0] = rng.uniform(-20, 20, n)
        scale = np.ones(n)
        shift = np.zeros((n, 2))
    skin = rng.uniform(*aug.skin, n)
    hair = rng.uniform(0.0, 1.0, n)
    params = [
        params_from_attributes(
            schema, values[i], identity=identity[i], skin=float(skin[i]), hair=float(hair[i]),
            light_azimuth=float(lighting[i, 0]), light_elevation=float(lighting[i, 1]),
            light_strength=float(lighting[i, 2]), ambient=float(lighting[i, 3]),
            scale=float(scale[i]), shift_x=float(shift[i, 0]), shift_y=float(shift[i, 1]),
        )
        for i in range(n)
    ]
    backgrounds = None
    if randomise_scene and aug.background_probability > 0:
        textured = random_backgrounds(rng, n, size)
        plain = rng.random(n) >= aug.background_probability
        textured[plain] = 0  # replaced below by the renderer's own background where drawn
        backgrounds = [None if plain[i] else (np.repeat(textured[i][..., None], 3, 2) if rgb else textured[i])
                       for i in range(n)]
        if all(b is None for b in backgrounds):
            backgrounds = None
    images = np.asarray(render_params(params, size, config.data.face_model, rgb=rgb, backgrounds=backgrounds),
                        dtype=np.uint8)
    images = images.transpose(0, 3, 1, 2) if rgb else images[:, None]
    return RenderedChunk(
        images=np.ascontiguousarray(images),
        attributes=schema.normalise(values),
        identity=identity,
        lighting=((lighting - low) / (high - low)).astype(np.float32),
        values=values,
    )


class RenderStream(IterableDataset):
    """An endless stream of rendered chunks; chunk k depends only on (seed, k)."""

    def __init__(self, config: ReconConfig, seed: int, start_chunk: int = 0, chunk: int | None = None):
        self.config = config
        self.seed = seed
        self.start_chunk = start_chunk
        self.chunk = chunk or config.data.chunk

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:
            torch.set_num_threads(1)
        k = self.start_chunk + worker
        while True:
            rendered = render_chunk(self.config, np.random.default_rng([self.seed, k]), self.chunk)
            yield {
                "images": torch.from_numpy(rendered.images),
                "attributes": torch.from_numpy(rendered.attributes),
                "identity": torch.from_numpy(rendered.identity),
                "lighting": torch.from_numpy(rendered.lighting),
            }
            k += workers


def chunk_loader(config: ReconConfig, start_chunk: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Iterate rendered chunks from ``config.data.workers`` processes, in chunk order."""
    workers = config.data.workers
    loader = DataLoader(
        RenderStream(config, config.train.seed, start_chunk),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    return iter(loader)


class BatchSource:
    """Training batches from the chunk stream, either fresh every step or through a device pool.

    ``chunks_consumed`` is saved in checkpoints so a resumed run continues the same stream.
    """

    KEYS = ("images", "attributes", "identity", "lighting")

    def __init__(self, config: ReconConfig, device: torch.device, chunks_consumed: int = 0):
        self.config = config
        self.device = device
        self.chunks_consumed = chunks_consumed
        self._chunks = chunk_loader(config, chunks_consumed, device)
        self._pool: dict[str, torch.Tensor] | None = None
        self._cursor = 0
        self._generator = torch.Generator(device="cpu").manual_seed(config.train.seed * 7919 + chunks_consumed)

    def _next_chunk(self) -> dict[str, torch.Tensor]:
        chunk = next(self._chunks)
        self.chunks_consumed += 1
        return {k: chunk[k].to(self.device, non_blocking=True) for k in self.KEYS}

    def _take(self, n: int) -> dict[str, torch.Tensor]:
        parts = []
        while sum(p["images"].shape[0] for p in parts) < n:
            parts.append(self._next_chunk())
        return {k: torch.cat([p[k] for p in parts])[:n] for k in self.KEYS}

    def next_batch(self) -> dict[str, torch.Tensor]:
        batch = self.config.train.batch_size
        if self.config.data.mode == "stream":
            return self._take(batch)
        size = self.config.data.pool_size
        if self._pool is None:
            self._pool = self._take(size)
        else:
            fresh = self._take(self.config.data.refresh)
            n = fresh["images"].shape[0]
            index = (torch.arange(n) + self._cursor) % size
            index = index.to(self.device)
            for k in self.KEYS:
                self._pool[k][index] = fresh[k]
            self._cursor = (self._cursor + n) % size
        pick = torch.randperm(size, generator=self._generator)[:batch].to(self.device)
        return {k: v[pick] for k, v in self._pool.items()}


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, S, S) -> float in [-1, 1], the scaling every project network uses."""
    return images.float() / 127.5 - 1.0


def augment_batch(images: torch.Tensor, augment: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Photometric and occlusion randomisation of a uint8 batch on its device -> float in [-1, 1].

    Labels are unchanged by every operation here (no geometric change), which is why crop jitter lives
    in the renderer instead.
    """
    device = images.device
    n, c, s, _ = images.shape

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(device)

    x = images.float() / 255.0
    # Occluders: a rectangle of random grey over part of the face (hands, hair, glasses, microphones).
    occlude = rand(n) < augment.occluder_probability
    if occlude.any():
        lo, hi = augment.occluder_size
        w = (lo + (hi - lo) * rand(n)) * s
        h = (lo + (hi - lo) * rand(n)) * s
        x0 = rand(n) * (s - w)
        y0 = rand(n) * (s - h)
        grid = torch.arange(s, device=device, dtype=torch.float32)
        inside_x = (grid[None] >= x0[:, None]) & (grid[None] < (x0 + w)[:, None])
        inside_y = (grid[None] >= y0[:, None]) & (grid[None] < (y0 + h)[:, None])
        mask = (inside_y[:, :, None] & inside_x[:, None, :] & occlude[:, None, None])[:, None]
        fill = rand(n, c, 1, 1)
        x = torch.where(mask, fill.expand_as(x), x)
    # Low resolution (LFW-like crops of ~25 px) and blur.
    lowres = rand(n) < augment.lowres_probability
    if lowres.any():
        small = int(s * float(0.3 + 0.4 * rand(1).item()))
        down = torch.nn.functional.interpolate(x[lowres], size=(small, small), mode="area")
        x[lowres] = torch.nn.functional.interpolate(down, size=(s, s), mode="bilinear", align_corners=False)
    blur = rand(n) < augment.blur_probability
    if blur.any():
        x[blur] = gaussian_blur(x[blur], float(0.5 + 1.0 * rand(1).item()))
    # Photometric: gamma, contrast around the image mean, brightness, then sensor noise.
    g_lo, g_hi = augment.gamma
    gamma = (g_lo + (g_hi - g_lo) * rand(n)).view(n, 1, 1, 1)
    x = x.clamp(1e-4, 1.0) ** gamma
    c_lo, c_hi = augment.contrast
    contrast = (c_lo + (c_hi - c_lo) * rand(n)).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + (rand(n).view(n, 1, 1, 1) * 2 - 1) * augment.brightness / 2
    n_lo, n_hi = augment.noise_std
    sigma = (n_lo + (n_hi - n_lo) * rand(n)).view(n, 1, 1, 1)
    x = x + sigma * torch.randn(x.shape, generator=generator).to(device) / 2
    return (x.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()
