"""Training throughput of the conditional BEGAN-CS (images/s) for several batch sizes and precisions.

Random images (throughput does not depend on content). Example:
    python benchmarks/gan_throughput.py --device cuda --size 64 --n 64 --batch 16 64 256 --steps 60
    OMP_NUM_THREADS=2 python benchmarks/gan_throughput.py --device cpu --n 32 --batch 16 --steps 10
    # the extras a real config adds (blurred label path, weight average, mode-seeking pairs) vs the paper's step:
    OMP_NUM_THREADS=2 python benchmarks/gan_throughput.py --device cpu --n 32 --batch 16 --steps 10 \
        --config paper --config configs/gan/stage6_gpu.toml --set loss.mode_seeking=0.005 --precision bf16
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from surrogate.schema import DEFAULT_SCHEMA
from training.gan.config import load_config, parse_override
from training.gan.dataset import FaceDataset
from training.gan.loop import GanTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--config", action="append", default=None,
                        help="GAN config whose model and losses to time ('paper' = the defaults); repeat to "
                             "compare in one run. Image size, n, batch and precision come from the flags, the "
                             "rest (latent_dim, label_blur, ema_kimg, mode_seeking, ...) from the config.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Override a value of every --config other than 'paper' (repeatable).")
    args = parser.parse_args()
    if args.overrides and all(c == "paper" for c in args.config or ["paper"]):
        parser.error("--set applies to --config files; with only 'paper' there is nothing to override")
    if any(pair.split("=")[0] in ("optim.batch_size", "model.n", "model.image_size") for pair in args.overrides):
        parser.error("set the batch, n and image size with --batch, --n and --size")
    rng = np.random.default_rng(0)
    rows = 2048
    images = rng.integers(0, 256, (rows, 1, args.size, args.size), dtype=np.uint8)
    values = DEFAULT_SCHEMA.denormalise(rng.random((rows, len(DEFAULT_SCHEMA))).astype(np.float32))
    data = FaceDataset(DEFAULT_SCHEMA, images, values, np.arange(rows), [str(i) for i in range(rows)])
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"{args.size}x{args.size} n={args.n}"
    )
    for config_path in args.config or ["paper"]:
        for precision in args.precision:
            for batch in args.batch:
                run(args, data, None if config_path == "paper" else config_path, precision, batch)


def run(args: argparse.Namespace, data: FaceDataset, config_path: str | None, precision: str, batch: int) -> None:
    """Time ``args.steps`` training steps after a warm-up and print ms/step and images/s."""
    bf16 = precision == "bf16"
    overrides = {
        "model.image_size": args.size,
        "model.n": args.n,
        "optim.batch_size": batch,
        "train.device": args.device,
        "train.amp": bf16,
        "train.cpu_bf16": bf16,
        "train.channels_last": bf16,
        "train.log_every": 10**9,
        "train.sample_every": 10**9,
        "train.checkpoint_every": 10**9,
        "data.held_out_fraction": 0.0,
    }
    if config_path is not None:
        overrides.update(parse_override(pair) for pair in args.overrides)
    config = load_config(config_path, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GanTrainer(config, data, tmp, progress=False)
        for _ in range(3):  # warm-up (cudnn autotune, allocator)
            trainer.train_step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            losses = trainer.train_step()
        float(losses.loss_d)
        if args.device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    print(
        f"{config_path or 'paper'}: {precision:5s} batch {batch:4d}: {elapsed / args.steps * 1000:8.1f} ms/step, "
        f"{batch * args.steps / elapsed:8.0f} images/s",
        flush=True,
    )


if __name__ == "__main__":
    main()
