"""Portraits of nobody: seed -> z -> w -> a photoreal 1024x1024 face, torch-free (OpenVINO on the CPU).

The network is MobileStyleGAN, a StyleGAN2-FFHQ distilled into a small generator, shipped as OpenVINO IR
inside PyPI's ``random-face`` wheel (``surrogate.assets.PORTRAIT_GENERATOR``; research and non-commercial
use only, see its licence there). The faces belong to no one, which also removes the privacy question
about the training faces of everything trained on them.

Determinism: z comes from the seed alone (``noise.STREAM_PORTRAIT_Z``); the networks are compiled for a
fixed batch and short batches are padded, so an image does not depend on which other seeds share its
batch or on how a job is split into chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from surrogate.assets import PORTRAIT_GENERATOR, find
from surrogate.noise import STREAM_PORTRAIT_Z, rng_for

W_DIM = 512
FULL_SIDE = 1024
W_AVG_SEED = 20210721  # the z sample whose mean w is the truncation centre (part of the model version)
W_AVG_SAMPLES = 10_000
MAP_BATCH = 256  # the mapping network always runs at this batch (cheap), so w never depends on the batch


_W_AVG: dict[str, np.ndarray] = {}


class PortraitModelError(RuntimeError):
    """OpenVINO is missing, or the model files are not fetched."""


def z_for_seeds(seeds: Sequence[int]) -> np.ndarray:
    """The generator's standard-normal z (N, 512) for each seed."""
    if not len(seeds):
        return np.zeros((0, W_DIM), np.float32)
    return np.stack([rng_for(int(s), STREAM_PORTRAIT_Z).standard_normal(W_DIM) for s in seeds]).astype(np.float32)


class PortraitGenerator:
    """``w(seeds)`` -> (N, 512) truncated w; ``render(w)`` -> (N, S, S, 3) uint8 RGB portraits."""

    def __init__(self, *, psi: float = 0.7, batch: int = 4, threads: int = 0, model_dir: str | None = None) -> None:
        if not 0.0 <= psi <= 1.5:
            raise ValueError(f"psi must be in [0, 1.5], got {psi}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.psi = float(psi)
        self.batch = int(batch)
        self.threads = int(threads)
        self.model_dir = model_dir

    def _read(self, stem: str, input_name: str, batch: int, cut=None):
        """Read one network and reshape it to ``batch`` (-1: any batch); ``cut(model)`` may return a part of it."""
        try:
            import openvino as ov
        except ImportError as exc:
            raise PortraitModelError(
                f"portraits need OpenVINO ({exc}): pip install 'surrogate-faces[portraits]'") from exc
        base = None if self.model_dir is None else f"{self.model_dir}/{stem}"
        xml = find(PORTRAIT_GENERATOR, f"{stem}.xml", f"{base}.xml" if base else None)
        weights = find(PORTRAIT_GENERATOR, f"{stem}.bin", f"{base}.bin" if base else None)
        model = ov.Core().read_model(str(xml), str(weights))
        model.reshape({input_name: [batch, W_DIM]})
        return cut(model) if cut is not None else model

    def _compile(self, stem: str, input_name: str, batch: int, cut=None):
        """Read, reshape to ``batch`` and compile one network (``_read``)."""
        return compile_cpu(self._read(stem, input_name, batch, cut), self.threads)

    @cached_property
    def _mapping(self):
        return self._compile("MappingNetwork", "var", MAP_BATCH)

    @cached_property
    def _synthesis(self):
        return self._compile("SynthesisNetwork", "style", self.batch)

    @staticmethod
    def _run(compiled, x: np.ndarray, *more: np.ndarray) -> np.ndarray:
        """Run in the compiled batch, padding the last chunk (so a row never depends on its neighbours).

        ``more``: the graph's further inputs, in order, one row per row of ``x``.
        """
        batch = int(compiled.inputs[0].get_shape()[0])
        request = compiled.create_infer_request()
        out = []
        for start in range(0, len(x), batch):
            inputs = {}
            for i, array in enumerate((x, *more)):
                chunk = array[start:start + batch]
                inputs[i] = np.zeros((batch, *chunk.shape[1:]), np.float32)
                inputs[i][: len(chunk)] = chunk
            result = request.infer(inputs)
            out.append(np.array(result[compiled.outputs[0]][: min(batch, len(x) - start)], copy=True))
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def map(self, z: np.ndarray) -> np.ndarray:
        """Untruncated w for z (N, 512)."""
        return self._run(self._mapping, np.asarray(z, np.float32))

    @cached_property
    def w_avg(self) -> np.ndarray:
        """The truncation centre: the mean w of a fixed sample of z (computed once per model folder)."""
        key = str(self.model_dir or PORTRAIT_GENERATOR.folder)
        if key not in _W_AVG:
            z = rng_for(W_AVG_SEED, STREAM_PORTRAIT_Z).standard_normal((W_AVG_SAMPLES, W_DIM)).astype(np.float32)
            _W_AVG[key] = self.map(z).astype(np.float64).mean(0).astype(np.float32)
        return _W_AVG[key]

    def w(self, seeds: Sequence[int], psi: float | None = None) -> np.ndarray:
        """Truncated w = w_avg + psi (w - w_avg) for each seed."""
        psi = self.psi if psi is None else psi
        raw = self.map(z_for_seeds(seeds))
        return (self.w_avg + np.float32(psi) * (raw - self.w_avg)).astype(np.float32)

    def render(self, w: np.ndarray, side: int = FULL_SIDE) -> np.ndarray:
        """Portraits for w (N, 512): (N, side, side, 3) uint8 RGB, area-downscaled from 1024 when smaller."""
        images = []
        w = np.asarray(w, np.float32)
        for start in range(0, len(w), self.batch):
            raw = self._run(self._synthesis, w[start:start + self.batch])  # (n, 3, 1024, 1024) in [-1, 1]
            pixels = np.clip(np.rint((raw.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)
            images.extend(downscale(p, side) for p in pixels)
        return np.stack(images) if images else np.zeros((0, side, side, 3), np.uint8)


def compile_cpu(model, threads: int = 0):
    """Compile an ov.Model for the CPU in float32 (bf16 would change pixels with the CPU's features)."""
    import openvino as ov

    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(model, "CPU", config)


def downscale(image: np.ndarray, side: int) -> np.ndarray:
    """Area-average a square uint8 image to side x side (no change when it already has that side)."""
    if image.shape[0] == side:
        return image
    import cv2

    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
