"""The conditional BEGAN-CS generator's serving speed in torch, against the device's roofline.

Modes: fp32; bf16 autocast + channels_last; the same replayed from a CUDA graph (one capture per batch
size: the kernel launches dominate this small network, which a graph replays at once). For each batch size it
prints images/s, achieved TFLOP/s (multiply-adds of every conv and linear layer, counted by forward hooks,
x 2) and the share of the peak given by --peak-tflops (H200 bf16 dense: 989 from the data sheet; about 790
measured on large matrix products there, docs/gan.md).

    python benchmarks/gpu_generator.py --checkpoint runs/RUN/snapshots/generator-STEP.pt --device cuda
    python benchmarks/gpu_generator.py --config configs/gan/portraits64.toml --device cpu --batches 1,8 --peak-tflops 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.gan.config import load_config  # noqa: E402
from training.gan.networks import Generator  # noqa: E402


def count_flops(generator: torch.nn.Module, z: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one forward pass at this batch (2 x the multiply-adds of conv and linear layers)."""
    total = [0.0]

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total[0] += 2.0 * output.numel() * kernel
        elif isinstance(module, torch.nn.Linear):
            total[0] += 2.0 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in generator.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.no_grad():
        generator(z, y)
    for handle in handles:
        handle.remove()
    return total[0]


def timed(step, device: str, repeats: int) -> float:
    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--config", type=Path, help="random weights of this config's generator")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="1,8,64,256,1024")
    parser.add_argument("--modes", default="fp32,bf16,bf16-graphs")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()

    if args.checkpoint:
        from training.gan.checkpoint import load_generator

        generator, _, _ = load_generator(args.checkpoint, args.device)
    else:
        generator = Generator(load_config(args.config).model, 10).to(args.device).eval()
    n_attributes, z_dim = generator.n_attributes, generator.cfg.z_dim
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"device {args.device} {torch.cuda.get_device_name(0) if args.device == 'cuda' else ''}, torch "
          f"{torch.__version__}, peak {args.peak_tflops} TFLOP/s")
    print("| mode | batch | images/s | TFLOP/s | share of peak |\n|---|---|---|---|---|")
    for mode in args.modes.split(","):
        net = generator.to(memory_format=torch.channels_last) if mode != "fp32" else generator
        if mode.endswith("graphs") and args.device != "cuda":
            continue
        for batch in map(int, args.batches.split(",")):
            z = torch.rand(batch, z_dim, device=args.device) * 2 - 1
            y = torch.rand(batch, n_attributes, device=args.device)
            flops = count_flops(generator, z, y)

            def step(net=net, z=z, y=y, bf16=mode != "fp32") -> None:
                with torch.no_grad(), torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16):
                    net(z, y)

            if mode.endswith("graphs"):
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        step()
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                step = graph.replay

            seconds = timed(step, args.device, args.repeats)
            tflops = flops / seconds / 1e12
            print(f"| {mode} | {batch} | {batch / seconds:,.0f} | {tflops:.1f} | {tflops / args.peak_tflops:.1%} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
