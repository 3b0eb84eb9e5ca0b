"""Mode-collapse experiments: k_t and same-y diversity of short runs under different loss settings.

Renders a small face dataset with the project's 3-D face model (random identity, skin, hair and lighting:
things that y does NOT determine, so z must carry them), trains each variant for a few hundred steps and
prints k_t, L(x), L(G) and the diversity ratio (same-y different-z distance / real images with similar
attributes). Findings are in docs/gan.md. Example:
    OMP_NUM_THREADS=1 python benchmarks/gan_mode_collapse.py --steps 600 --variants paper upstream
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from surrogate.face_model import N_IDENTITY, params_from_attributes
from surrogate.noise import identity_from_seed, scene_rng
from surrogate.render import render_batch
from surrogate.schema import DEFAULT_SCHEMA
from training.gan.config import load_config
from training.gan.dataset import FaceDataset
from training.gan.evaluate import RidgePixelEstimator, mean_pairwise_l1, nearest_attribute_groups, pearson
from training.gan.loop import GanTrainer
from training.gan.sampling import generate_uint8

VARIANTS: dict[str, dict[str, object]] = {
    "paper": {"loss.gamma": 0.1, "loss.alpha": 0.5},
    "upstream": {"loss.gamma": 0.5, "loss.alpha": 0.1, "loss.recon": "l2"},
    "gamma05": {"loss.gamma": 0.5, "loss.alpha": 0.5},
    "gamma03": {"loss.gamma": 0.3, "loss.alpha": 0.5},
    "paper_nolabel": {"loss.gamma": 0.1, "loss.alpha": 0.5, "loss.label_weight_g": 0.0, "loss.label_weight_d": 0.0},
    "paper_kinit": {"loss.gamma": 0.1, "loss.alpha": 0.5, "loss.k_init": 0.05},
    "gamma05_lr2": {"loss.gamma": 0.5, "loss.alpha": 0.5, "optim.lr": 2e-4},
    "gamma05_alpha01": {"loss.gamma": 0.5, "loss.alpha": 0.1},
    "gamma05_latent74": {"loss.gamma": 0.5, "loss.alpha": 0.5, "model.latent_dim": 74},
    "paper_latent74": {"loss.gamma": 0.1, "loss.alpha": 0.5, "model.latent_dim": 74},
}


def sample_attributes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Plausible attribute rows: moderate pose, sparse action units, gender near 0 or 1."""
    yaw = rng.uniform(-40, 40, n)
    pitch = rng.uniform(-20, 20, n)
    roll = rng.uniform(-15, 15, n)
    aus = rng.uniform(0, 5, (n, 6)) * (rng.random((n, 6)) < 0.5)
    gender = np.clip(rng.choice([0.05, 0.95], n) + rng.normal(0, 0.05, n), 0, 1)
    return np.column_stack([yaw, pitch, roll, aus, gender]).astype(np.float32)


def render_dataset(n: int, size: int, seed: int, cache: Path) -> FaceDataset:
    if cache.is_file():
        data = np.load(cache)
        images, values = data["images"], data["values"]
    else:
        values = sample_attributes(np.random.default_rng(seed), n)
        params = []
        for i, row in enumerate(values):
            scene = scene_rng(seed * 100_000 + i)
            params.append(
                params_from_attributes(
                    DEFAULT_SCHEMA,
                    row,
                    identity=identity_from_seed(seed * 100_000 + i, N_IDENTITY),
                    skin=float(scene.uniform(0.2, 0.9)),
                    hair=float(scene.uniform(0, 1)),
                    light_azimuth=float(scene.uniform(-40, 40)),
                    light_elevation=float(scene.uniform(0, 40)),
                    light_strength=float(scene.uniform(0.5, 0.8)),
                    ambient=float(scene.uniform(0.25, 0.45)),
                )
            )
        images = render_batch(params, size)[:, None]
        np.savez_compressed(cache, images=images, values=values)
    return FaceDataset(DEFAULT_SCHEMA, images, values, np.arange(len(images)), [str(i) for i in range(len(images))])


def fidelity(trainer: GanTrainer, data: FaceDataset, estimator: RidgePixelEstimator) -> dict[str, float]:
    """Pearson r (requested vs ridge-estimated) for a few attributes on 300 random training vectors."""
    rng = np.random.default_rng(1)
    pick = rng.choice(len(data), 300, replace=False)
    z = rng.uniform(-1, 1, (300, trainer.config.model.z_dim)).astype(np.float32)
    est = estimator.predict(generate_uint8(trainer.output_generator, z, data.normalised[pick]))
    names = ("yaw", "pitch", "AU12", "AU04", "gender")
    return {n: pearson(data.values[pick, data.schema.index(n)], est[:, data.schema.index(n)]) for n in names}


def diversity_ratio(trainer: GanTrainer, data: FaceDataset, groups: int = 24, per_group: int = 8) -> tuple:
    rng = np.random.default_rng(0)
    y = data.normalised
    anchors = rng.choice(len(y), groups, replace=False)
    z = rng.uniform(-1, 1, (groups * per_group, trainer.config.model.z_dim)).astype(np.float32)
    fake = generate_uint8(trainer.output_generator, z, np.repeat(y[anchors], per_group, axis=0))
    fake_div = mean_pairwise_l1(fake.reshape(groups, per_group, *fake.shape[1:]))
    real = data.images[:, 0][nearest_attribute_groups(y, anchors, per_group)]
    real_div = mean_pairwise_l1(real)
    return fake_div, real_div, fake_div / real_div


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--variants", nargs="+", default=["paper", "upstream", "gamma05"])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gan_collapse_faces.npz")
    parser.add_argument("--out", type=Path, default=None, help="keep each variant's run folder here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = render_dataset(args.images, args.size, 0, args.cache)
    estimator = RidgePixelEstimator(data.schema).fit(data.images[:, 0], data.values)
    print(f"{len(data)} faces {args.size}x{args.size}; {args.steps} steps per variant, n={args.n}, batch 16")
    for name in args.variants:
        overrides = {
            "model.image_size": args.size,
            "model.n": args.n,
            "train.log_every": max(args.steps // 6, 1),
            "train.sample_every": args.steps,
            "train.checkpoint_every": args.steps,
            "data.held_out_fraction": 0.0,
            **VARIANTS[name],
        }
        config = load_config(None, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out / name if args.out else Path(tmp)
            trainer = GanTrainer(config, data, out, progress=False)
            start = time.perf_counter()
            trainer.run(args.steps)
            elapsed = time.perf_counter() - start
            trace = " ".join(f"{float(r['k_t']):.3f}" for r in trainer.metrics)
            last = trainer.metrics[-1]
            fake_div, real_div, ratio = diversity_ratio(trainer, data)
            rs = " ".join(f"{k} {v:.2f}" for k, v in fidelity(trainer, data, estimator).items())
        print(
            f"{name:14s} k_t trace [{trace}]  L(x) {float(last['loss_real']):.4f} L(G) "
            f"{float(last['loss_fake']):.4f} label_g {float(last['label_fake']):.4f}  diversity "
            f"{fake_div:.4f}/{real_div:.4f} = ratio {ratio:.3f}  r: {rs}  ({elapsed:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
