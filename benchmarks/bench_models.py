"""Throughput of the exported models: onnxruntime vs torch eager, and vs this CPU's conv peak.

    .venv/bin/python benchmarks/bench_models.py            # full: batches 1/16/64/256, < 3 min
    .venv/bin/python benchmarks/bench_models.py --quick    # seconds: batches 1/16, short timings
    .venv/bin/python benchmarks/bench_models.py --device cuda   # GPU machine: adds CUDA / TensorRT
    PY benchmarks/bench_models.py --ort-only REPO/gan_generator/1/model.onnx   # no torch needed

``--ort-only`` times one exported model with every onnxruntime execution provider the running
onnxruntime has (CPU; OpenVINO fp32 and bf16 from onnxruntime-openvino; CUDA / TensorRT from
onnxruntime-gpu) and reports each one's difference from the CPU provider: run it with the Python
of an environment holding that onnxruntime build (they cannot share one venv with onnxruntime).

Models: the default repository's trained networks when ``--repository`` holds them (torch side from
``--gan-checkpoint`` / ``--recon-checkpoint``), else freshly initialised networks of the default size
(64x64 BEGAN generator with n=64; 64x64 ReconNet): throughput does not depend on the weights.

Backends (same process, same cores, so ratios are fair):
  torch-fp32      torch eager, float32, NCHW
  torch-bf16-cl   torch eager, channels_last + bf16 autocast (what training uses on CPU)
  ort-fp32        onnxruntime, ORT_ENABLE_ALL, intra-op threads = cores
  ort-fp16        onnxruntime on the parity-checked fp16 export
  ort-fp32-1t     onnxruntime with 1 intra-op thread (what one of N Triton instances gets)
Each figure is images/s (median of repeated timed runs within a time budget) and, as a fraction
of the conv peak, GFLOP/s of the model / GFLOP/s of a large 3x3 convolution on the same cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(run: Callable[[], object], budget_s: float, min_runs: int = 2) -> float:
    """Median seconds per call: one warm-up call, then repeat until the budget is spent."""
    run()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        if len(times) >= 50:
            break
    return statistics.median(times)


def model_flops(module, *args) -> float:
    """FLOPs (2 x multiply-adds) of one forward pass, from Conv2d / Linear shapes."""
    import torch

    total = 0.0

    def conv_hook(mod, _inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += 2.0 * (mod.in_channels // mod.groups) * k * out.numel()

    def linear_hook(mod, _inp, out):
        nonlocal total
        total += 2.0 * mod.in_features * out.numel()

    handles = []
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        module(*args)
    for h in handles:
        h.remove()
    return total


def conv_peak_gflops(budget_s: float, device: str) -> dict[str, float]:
    """GFLOP/s of a large 3x3 conv (64 -> 64 channels, 64x64, batch 16): torch fp32/bf16 and ORT fp32."""
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from surrogate.model_repo import create_session

    n, c, s = 16, 64, 64
    flops = 2.0 * c * 9 * c * s * s * n
    x = torch.randn(n, c, s, s, device=device)
    conv = torch.nn.Conv2d(c, c, 3, padding=1).to(device).eval()
    peaks = {}
    with torch.no_grad():
        peaks["torch-fp32"] = flops / timed(lambda: conv(x), budget_s) / 1e9
        xc, convc = x.to(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
        with torch.autocast(device, dtype=torch.bfloat16):
            peaks["torch-bf16-cl"] = flops / timed(lambda: convc(xc), budget_s) / 1e9
    weight = numpy_helper.from_array(conv.weight.detach().cpu().numpy(), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, s, s])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, s, s])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = create_session(model.SerializeToString())
    feed = {"x": x.cpu().numpy()}
    peaks["ort-fp32"] = flops / timed(lambda: session.run(None, feed), budget_s) / 1e9
    del onnx
    return peaks


def build_models(args):
    """(name, torch module taking float inputs, example input maker, exported fp32, exported fp16)."""
    import torch

    from export.onnx_export import GeneratorGraph, ReconGraph, export_generator, export_reconnet
    from surrogate.schema import DEFAULT_SCHEMA

    torch.manual_seed(0)
    models = []
    if args.gan_checkpoint:
        from training.gan.checkpoint import load_generator

        generator, schema, _ = load_generator(args.gan_checkpoint)
    else:
        from training.gan.config import ModelConfig
        from training.gan.networks import Generator

        schema = DEFAULT_SCHEMA
        generator = Generator(ModelConfig(image_size=args.size, n=args.n), len(schema)).eval()
    models.append(("gan_generator", GeneratorGraph(generator, schema).eval(),
                   export_generator(generator, schema, batch_sizes=(2,)),
                   export_generator(generator, schema, fp16=True, batch_sizes=(2,))))
    if args.recon_checkpoint:
        from training.recon.checkpoint import load_reconnet

        net, schema, config = load_reconnet(args.recon_checkpoint)
        size, channels = int(config["image_size"]), int(config["channels"])
    else:
        from training.recon.networks import ReconNet

        schema, size, channels = DEFAULT_SCHEMA, args.size, 1
        net = ReconNet(len(schema), 40, image_size=size, channels=channels).eval()
    models.append(("recon", ReconGraph(net, schema).eval(),
                   export_reconnet(net, schema, image_size=size, channels=channels, batch_sizes=(2,)),
                   export_reconnet(net, schema, image_size=size, channels=channels, fp16=True, batch_sizes=(2,))))
    return models


def make_inputs(exported, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for spec in exported.inputs:
        shape = (batch, *spec.shape[1:])
        if spec.dtype == np.uint8:
            feed[spec.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif spec.name == "attributes":
            feed[spec.name] = rng.uniform(exported.schema.lows, exported.schema.highs, shape).astype(np.float32)
        else:
            feed[spec.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feed


def ort_only(path: Path, batches: list[int], budget: float, threads: int) -> None:
    """Time one model.onnx on every available onnxruntime provider; differences vs the CPU provider."""
    import json

    import onnxruntime as ort

    from surrogate.model_repo import create_session, session_io

    available = ort.get_available_providers()
    cpu = create_session(path, intra_op_threads=threads)
    sessions = {"cpu-fp32": cpu}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if "OpenVINOExecutionProvider" in available:
        bf16 = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}})
        for label, extra in (("openvino-fp32", {}), ("openvino-bf16", {"load_config": bf16})):
            provider = ("OpenVINOExecutionProvider", {"device_type": "CPU", "precision": "FP32", **extra})
            sessions[label] = ort.InferenceSession(str(path), options, providers=[provider, "CPUExecutionProvider"])
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if provider in available:
            chain = [provider, "CUDAExecutionProvider", "CPUExecutionProvider"]
            sessions[provider.removesuffix("ExecutionProvider").lower()] = create_session(path, providers=chain)
    inputs, outputs = session_io(cpu)
    attributes_json = path.parent.parent / "attributes.json"
    lows = highs = None
    if attributes_json.is_file():
        specs = json.loads(attributes_json.read_text())["attributes"]
        lows = np.array([a["low"] for a in specs], np.float32)
        highs = np.array([a["high"] for a in specs], np.float32)
    rng = np.random.default_rng(0)
    print(f"{path}: onnxruntime {ort.__version__}, providers {available}, {threads} threads")
    for batch in batches:
        feed = {}
        for spec in inputs:
            shape = (batch, *spec.shape[1:])
            if spec.dtype == np.uint8:
                feed[spec.name] = rng.integers(0, 256, shape, dtype=np.uint8)
            elif spec.name == "attributes" and lows is not None:
                feed[spec.name] = rng.uniform(lows, highs, shape).astype(np.float32)
            else:
                feed[spec.name] = rng.uniform(-1, 1, shape).astype(np.float32)
        reference = cpu.run(None, feed)
        cells = []
        for label, session in sessions.items():
            rate = batch / timed(lambda: session.run(None, feed), budget)  # noqa: B023
            got = session.run(None, feed)
            diffs = []
            for spec, want, have in zip(outputs, reference, got, strict=True):
                delta = np.abs(have.astype(np.float64) - want.astype(np.float64))
                scale = 1.0 if spec.dtype == np.uint8 else np.maximum(1.0, np.abs(want)).max()
                diffs.append(f"{spec.name} {delta.max() / scale:.1e}" + (" levels" if spec.dtype == np.uint8 else ""))
            cells.append(f"{label} {rate:.0f}/s [{', '.join(diffs)}]")
        print(f"batch {batch:>3}: " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches 1/16 and short timings (a smoke run)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,16,64,256)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per figure")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch / onnxruntime threads")
    parser.add_argument("--size", type=int, default=64, help="image size of the fresh networks")
    parser.add_argument("--n", type=int, default=64, help="BEGAN filters n of the fresh generator")
    parser.add_argument("--gan-checkpoint", type=Path, default=None)
    parser.add_argument("--recon-checkpoint", type=Path, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--ort-only", type=Path, default=None, help="time this model.onnx on every provider")
    args = parser.parse_args()
    batches = [int(b) for b in (args.batches or ("1,16" if args.quick else "1,16,64,256")).split(",")]
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 1.0)
    if args.ort_only:
        ort_only(args.ort_only, batches, budget, args.threads)
        return

    import torch

    from surrogate.model_repo import available_providers, create_session

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"threads {args.threads}, batches {batches}, budget {budget}s per figure, "
          f"onnxruntime providers {available_providers()}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores (torch's OpenMP threads collapse when cores are oversubscribed)")
    peaks = conv_peak_gflops(budget, "cpu")
    peak = max(peaks.values())
    print("large 3x3 conv (16x64x64x64, 64->64): " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items())
          + f" GFLOP/s -> conv peak {peak:.1f} GFLOP/s")
    rng = np.random.default_rng(0)
    for name, graph, fp32, fp16 in build_models(args):
        example = make_inputs(fp32, 1, rng)
        torch_args = [torch.from_numpy(example[s.name]) for s in fp32.inputs]
        flops = model_flops(graph, *torch_args)
        print(f"\n{name}: {flops / 1e9:.3f} GFLOP per image; parity fp32 {fp32.parity.max_error:.1e}, "
              f"fp16 {fp16.parity.max_error:.1e}")
        sessions = {
            "ort-fp32": create_session(fp32.to_bytes(), intra_op_threads=args.threads),
            "ort-fp16": create_session(fp16.to_bytes(), intra_op_threads=args.threads),
            "ort-fp32-1t": create_session(fp32.to_bytes(), intra_op_threads=1),
        }
        if args.device == "cuda":
            for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                if provider in available_providers():
                    chain = [provider, "CUDAExecutionProvider", "CPUExecutionProvider"]
                    sessions[f"ort-{provider[:-17].lower()}"] = create_session(fp32.to_bytes(), providers=chain)
        graph_cl = copy.deepcopy(graph).to(memory_format=torch.channels_last)  # .to() is in place
        header = f"{'batch':>5} " + " ".join(f"{k:>14}" for k in
                                               ["torch-fp32", "torch-bf16-cl", *sessions]) + "   ort/torch  ort/bf16"
        print(header)
        for batch in batches:
            feed = make_inputs(fp32, batch, rng)
            tensors = [torch.from_numpy(feed[s.name]) for s in fp32.inputs]
            rates = {}
            with torch.no_grad():
                rates["torch-fp32"] = batch / timed(lambda: graph(*tensors), budget)  # noqa: B023
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    rates["torch-bf16-cl"] = batch / timed(lambda: graph_cl(*tensors), budget)  # noqa: B023
            for key, session in sessions.items():
                rates[key] = batch / timed(lambda: session.run(None, feed), budget)  # noqa: B023
            cells = " ".join(f"{rates[k]:8.0f} ({flops * rates[k] / 1e9 / peak:4.0%})" for k in rates)
            print(f"{batch:>5} {cells}   {rates['ort-fp32'] / rates['torch-fp32']:9.2f} "
                  f"{max(rates['ort-fp32'], rates['ort-fp16']) / rates['torch-bf16-cl']:9.2f}")
    print(f"\nimages/s (fraction of conv peak {peak:.0f} GFLOP/s); ort/torch = ort-fp32 / torch-fp32; "
          f"ort/bf16 = best ORT / torch-bf16-cl. Total {time.perf_counter() - started:.0f} s, "
          f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
