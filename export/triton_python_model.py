"""Triton Python-backend model: the version's model through the runtime its backend would use.

``write_python_backend_repository`` copies this file into every version folder as ``model.py``, beside the
version's model and a ``model_settings.json`` (``model_file``, ``extra_sys_path``, ``intra_op_threads``, and
for OpenVINO IR ``batch``). A ``model.onnx`` runs through onnxruntime, an OpenVINO IR (``model.xml`` +
``model.bin``: the photoreal method's ``portrait_synthesis``) through OpenVINO in float32, compiled for a
fixed batch with the last chunk padded, so a row's pixels never depend on its neighbours and equal the
embedded backend's. In production Triton's onnxruntime and OpenVINO backends load the same files; this
stands in for them where only the Python backend exists (the tritonserver bundled in nvidia-pytriton, which
the tests start). It runs inside Triton's Python stub, never in this project's processes: nothing here may
import the project.
"""

import json
import os
import sys

SETTINGS_FILE = "model_settings.json"

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), SETTINGS_FILE), encoding="utf-8") as _handle:
    SETTINGS = json.load(_handle)
# The stub's interpreter does not know the environment that holds the runtimes and numpy: put it first,
# before those imports.
for _path in reversed(SETTINGS["extra_sys_path"]):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def onnxruntime_runner(path, outputs):
    """``run(feed, rows)`` -> {output: array} through one onnxruntime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(SETTINGS["intra_op_threads"])
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    def run(feed, rows):
        return dict(zip(outputs, session.run(outputs, feed)))  # noqa: B905 - the stub may run Python 3.9

    return run


def openvino_runner(path, outputs):
    """``run(feed, rows)`` -> {output: array} through OpenVINO, float32, in padded chunks of the compiled batch."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    batch = int(SETTINGS["batch"])
    shapes = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        shape[0] = batch
        shapes[port.get_any_name()] = shape
    model.reshape(shapes)
    properties = {"INFERENCE_PRECISION_HINT": "f32"}
    if int(SETTINGS["intra_op_threads"]):
        properties["INFERENCE_NUM_THREADS"] = int(SETTINGS["intra_op_threads"])
    compiled = core.compile_model(model, "CPU", properties)
    request = compiled.create_infer_request()

    def run(feed, rows):
        results = {name: [] for name in outputs}
        for start in range(0, rows, batch):
            chunk = {}
            for name, array in feed.items():
                part = array[start:start + batch]
                padded = np.zeros((batch,) + part.shape[1:], part.dtype)
                padded[:len(part)] = part
                chunk[name] = padded
            count = min(batch, rows - start)
            answer = request.infer(chunk)
            for name in outputs:
                results[name].append(np.array(answer[compiled.output(name)][:count], copy=True))
        return {name: np.concatenate(parts) for name, parts in results.items()}

    return run


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], SETTINGS["model_file"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        runner = openvino_runner if path.endswith(".xml") else onnxruntime_runner
        self.run = runner(path, self.outputs)

    def execute(self, requests):
        # Run every request of the dynamic batch together, then split the results.
        arrays = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                  for name in self.inputs}
        sizes = [a.shape[0] for a in arrays[self.inputs[0]]]
        feed = {name: np.concatenate(parts) for name, parts in arrays.items()}
        results = self.run(feed, sum(sizes))
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(results[name][start:start + size]))
                       for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
