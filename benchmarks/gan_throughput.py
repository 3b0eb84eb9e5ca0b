"""Training throughput of the conditional BEGAN-CS (images/s) for several batch sizes and precisions.

Random images (throughput does not depend on content). Example:
    python benchmarks/gan_throughput.py --device cuda --size 64 --n 64 --batch 16 64 256 --steps 60
    OMP_NUM_THREADS=2 python benchmarks/gan_throughput.py --device cpu --n 32 --batch 16 --steps 10
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from surrogate.schema import DEFAULT_SCHEMA
from training.gan.config import load_config
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
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = 2048
    images = rng.integers(0, 256, (rows, 1, args.size, args.size), dtype=np.uint8)
    values = DEFAULT_SCHEMA.denormalise(rng.random((rows, len(DEFAULT_SCHEMA))).astype(np.float32))
    data = FaceDataset(DEFAULT_SCHEMA, images, values, np.arange(rows), [str(i) for i in range(rows)])
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"{args.size}x{args.size} n={args.n}"
    )
    for precision in args.precision:
        for batch in args.batch:
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
            config = load_config(None, overrides)
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
                f"{precision:5s} batch {batch:4d}: {elapsed / args.steps * 1000:8.1f} ms/step, "
                f"{batch * args.steps / elapsed:8.0f} images/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
