"""Tiny ONNX models with the exact I/O of the exported ``gan_generator`` and ``recon`` (contract 6).

Why: the service's tests and benchmark must run before (or without) trained models. These graphs are
built with the ``onnx`` helper API (no torch): a fixed random linear map + tanh for the generator, so
that every pixel depends on every attribute and on z, and a linear map + sigmoid for the recon model.
They are written in the real repository layout (config.pbtxt, attributes.json, <version>/model.onnx),
so ``surrogate.model_repo.ModelRepository`` and Triton read them like exported models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from surrogate.imageio import atomic_write_bytes, atomic_write_text
from surrogate.noise import Z_DIM
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema

N_IDENTITY_DEMO = 8


def _generator_graph(schema: AttributeSchema, size: int, channels: int, seed: int, z_dim: int = Z_DIM) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    width = len(schema) + z_dim
    pixels = channels * size * size
    weights = (rng.standard_normal((width, pixels)) / np.sqrt(width) * 1.5).astype(np.float32)
    inits = [
        numpy_helper.from_array(schema.lows, "low"),
        numpy_helper.from_array((schema.highs - schema.lows).astype(np.float32), "span"),
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(np.array([1.0], np.float32), "one"),
        numpy_helper.from_array(np.array([127.5], np.float32), "half"),
        numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
        numpy_helper.from_array(np.array([255.0], np.float32), "full"),
        numpy_helper.from_array(np.array([-1, channels, size, size], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Sub", ["attributes", "low"], ["shifted"]),
        helper.make_node("Div", ["shifted", "span"], ["normalised"]),
        helper.make_node("Concat", ["normalised", "z"], ["joined"], axis=1),
        helper.make_node("MatMul", ["joined", "w"], ["linear"]),
        helper.make_node("Tanh", ["linear"], ["began"]),
        helper.make_node("Add", ["began", "one"], ["positive"]),
        helper.make_node("Mul", ["positive", "half"], ["scaled"]),
        helper.make_node("Round", ["scaled"], ["rounded"]),
        helper.make_node("Clip", ["rounded", "zero", "full"], ["clipped"]),
        helper.make_node("Cast", ["clipped"], ["flat"], to=TensorProto.UINT8),
        helper.make_node("Reshape", ["flat", "shape"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes,
        "demo_generator",
        [
            helper.make_tensor_value_info("attributes", TensorProto.FLOAT, ["N", len(schema)]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", z_dim]),
        ],
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", channels, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="demo_models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _recon_graph(schema: AttributeSchema, size: int, channels: int, seed: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    pixels = channels * size * size
    inits = [
        numpy_helper.from_array(np.array([-1, pixels], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([1 / 255.0], np.float32), "inv255"),
        numpy_helper.from_array(
            (rng.standard_normal((pixels, len(schema))) / np.sqrt(pixels) * 4).astype(np.float32), "w_attr"
        ),
        numpy_helper.from_array(
            rng.standard_normal((pixels, N_IDENTITY_DEMO)).astype(np.float32) * 0.05, "w_id"
        ),
        numpy_helper.from_array(rng.standard_normal((pixels, 4)).astype(np.float32) * 0.05, "w_light"),
        numpy_helper.from_array(np.array([-2.0], np.float32), "centre"),
        numpy_helper.from_array(schema.lows, "low"),
        numpy_helper.from_array((schema.highs - schema.lows).astype(np.float32), "span"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["pixels", "flat_shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "inv255"], ["unit"]),
        helper.make_node("MatMul", ["unit", "w_attr"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "centre"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["normalised"]),
        helper.make_node("Mul", ["normalised", "span"], ["spread"]),
        helper.make_node("Add", ["spread", "low"], ["attributes"]),
        helper.make_node("MatMul", ["unit", "w_id"], ["identity"]),
        helper.make_node("MatMul", ["unit", "w_light"], ["lighting"]),
    ]
    graph = helper.make_graph(
        nodes,
        "demo_recon",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", channels, size, size])],
        [
            helper.make_tensor_value_info("attributes", TensorProto.FLOAT, ["N", len(schema)]),
            helper.make_tensor_value_info("identity", TensorProto.FLOAT, ["N", N_IDENTITY_DEMO]),
            helper.make_tensor_value_info("lighting", TensorProto.FLOAT, ["N", 4]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="demo_models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _config(
    name: str,
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    max_batch_size: int,
) -> str:
    def tensors(items: list[tuple[str, str, list[int]]]) -> str:
        return ",\n".join(
            f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}' for n, t, d in items
        )

    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{tensors(inputs)}\n]\noutput [\n{tensors(outputs)}\n]\n"
        "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
    )


def write_demo_repository(
    path: str | os.PathLike[str],
    *,
    schema: AttributeSchema = DEFAULT_SCHEMA,
    size: int = 32,
    channels: int = 1,
    version: int = 1,
    seed: int = 0,
    max_batch_size: int = 256,
    z_dim: int = Z_DIM,
) -> Path:
    """Write demo ``gan_generator`` and ``recon`` models into a model repository at ``path``."""
    root = Path(path)
    a = len(schema)
    models = {
        "gan_generator": (
            _generator_graph(schema, size, channels, seed, z_dim),
            [("attributes", "TYPE_FP32", [a]), ("z", "TYPE_FP32", [z_dim])],
            [("image", "TYPE_UINT8", [channels, size, size])],
            {"kind": "generator", "image_size": size, "channels": channels, "z_dim": z_dim},
        ),
        "recon": (
            _recon_graph(schema, size, channels, seed + 1),
            [("image", "TYPE_UINT8", [channels, size, size])],
            [
                ("attributes", "TYPE_FP32", [a]),
                ("identity", "TYPE_FP32", [N_IDENTITY_DEMO]),
                ("lighting", "TYPE_FP32", [4]),
            ],
            {"kind": "recon", "image_size": size, "channels": channels, "n_identity": N_IDENTITY_DEMO},
        ),
    }
    for name, (graph, inputs, outputs, facts) in models.items():
        folder = root / name
        atomic_write_bytes(folder / str(version) / "model.onnx", graph)
        atomic_write_text(folder / "config.pbtxt", _config(name, inputs, outputs, max_batch_size))
        atomic_write_text(
            folder / "attributes.json", json.dumps({**schema.to_dict(), **facts, "demo": True}, indent=2)
        )
        atomic_write_text(
            folder / "MODEL_CARD.md",
            f"# {name} (demo)\n\nRandom weights for tests and "
            "benchmarks of the service; produces noise, not faces.\n",
        )
    return root
