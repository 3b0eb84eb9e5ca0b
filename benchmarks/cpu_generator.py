"""The shipped generator's serving speed on this CPU (onnxruntime, the embedded backend), against its roofline.

The CPU counterpart of benchmarks/gpu_generator.py (issue 19, item 4). Per batch it prints images/s through
the runtime's embedded backend (the path `surrogate synthesize` and the service take), the achieved GFLOP/s
(2 x the multiply-adds of every Conv and Gemm/MatMul node, from the ONNX graph's inferred shapes) and that
rate's share of two ceilings measured in the same run on the same threads:

- compute: the best of several fp32 matrix products in onnxruntime itself (what its kernels can reach here);
- memory: a streaming copy in numpy (bytes read + written per second) times the generator's arithmetic
  intensity (FLOPs per byte of weights and activations moved at that batch, a lower bound on traffic).

The roofline is min(compute, intensity x bandwidth); the share says how far the served path is from it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cpu_generator.py --threads 2 --batches 1,8,64,256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from surrogate.runtime import GAN_MODEL, OnnxRuntimeBackend, default_repository  # noqa: E402


def graph_cost(model_path: Path, batch: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one forward pass at this batch: conv/matmul FLOPs; weights + every tensor once."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(model_path))
    for tensor in (*model.graph.input, *model.graph.output):
        dims = tensor.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = batch
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        shapes[value.name] = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
    weights = {w.name: tuple(w.dims) for w in model.graph.initializer}
    weight_bytes = sum(4 * int(np.prod(d)) for d in weights.values())
    activation_bytes = sum(4 * int(np.prod(s)) for s in shapes.values() if s and all(s))
    flops = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes.get(node.output[0])
            kernel = weights.get(node.input[1]) or shapes.get(node.input[1])
            if out and kernel:  # kernel (Cout, Cin / groups, kh, kw): grouped convolutions count themselves
                flops += 2.0 * np.prod(out) * np.prod(kernel[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            out = shapes.get(node.output[0])
            a = shapes.get(node.input[0]) or weights.get(node.input[0])
            if out and a:
                flops += 2.0 * np.prod(out) * a[-1]
        elif node.op_type == "ConvTranspose":
            raise SystemExit("ConvTranspose is not counted: extend graph_cost before trusting the figures")
    return float(flops), float(weight_bytes + activation_bytes)


def matmul_peak(threads: int, size: int = 1024, repeats: int = 8) -> float:
    """The best fp32 GFLOP/s of onnxruntime's MatMul at size^3 on these threads."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "peak",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.random((size, size), np.float32), "b": rng.random((size, size), np.float32)}
    session.run(None, feeds)
    best = min(_seconds(lambda: session.run(None, feeds)) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def stream_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """GB/s of a large copy (read + write), numpy."""
    src = np.ones(mib * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    best = min(_seconds(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * src.nbytes / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,8,64,256")
    parser.add_argument("--seconds", type=float, default=3.0, help="Timing budget per batch.")
    args = parser.parse_args()

    repository = args.repository or default_repository()
    backend = OnnxRuntimeBackend(repository, recon_model=None, intra_op_threads=args.threads)
    info = backend.gan
    model_path = Path(repository) / GAN_MODEL / str(info.version) / "model.onnx"
    peak = matmul_peak(args.threads)
    bandwidth = stream_bandwidth()
    print(f"{info.name} v{info.version} ({model_path}), onnxruntime on {args.threads} thread(s); "
          f"measured ceilings: matmul {peak:.0f} GFLOP/s, copy {bandwidth:.1f} GB/s")
    print("| batch | images/s | GFLOP/image | GFLOP/s | FLOP/byte | roofline GFLOP/s | share of roofline |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    n_attributes = info.input("attributes").shape[-1]
    for batch in map(int, args.batches.split(",")):
        attributes = rng.random((batch, n_attributes), np.float32)
        z = rng.uniform(-1, 1, (batch, info.z_dim)).astype(np.float32)
        backend.generate(attributes, z)
        runs, spent = 0, 0.0
        while spent < args.seconds or runs < 2:
            spent += _seconds(lambda a=attributes, z=z: backend.generate(a, z))
            runs += 1
        seconds = spent / runs
        flops, moved = graph_cost(model_path, batch)
        intensity = flops / moved
        roof = min(peak, intensity * bandwidth)
        achieved = flops / seconds / 1e9
        print(f"| {batch} | {batch / seconds:,.0f} | {flops / batch / 1e9:.3f} | {achieved:.1f} | {intensity:.1f} | "
              f"{roof:.0f} | {achieved / roof:.0%} |", flush=True)
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
