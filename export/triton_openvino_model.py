"""Triton Python-backend model: the version's OpenVINO IR (model.xml + model.bin) through OpenVINO.

``write_python_backend_repository`` copies this file into each version folder of an OpenVINO entry (the
photoreal method's ``portrait_synthesis``) as ``model.py``, beside the IR and a ``model_settings.json``
(``extra_sys_path``, ``intra_op_threads``, ``batch``). In production Triton's OpenVINO backend loads the
same IR; this stands in for it where only the Python backend exists (the tritonserver bundled in
nvidia-pytriton, which the tests start). Like the embedded backend it compiles the network for a fixed
batch in float32 and pads the last chunk, so a row's pixels never depend on its neighbours and equal the
embedded backend's. It runs inside Triton's Python stub: nothing here may import the project.
"""

import json
import os
import sys

SETTINGS_FILE = "model_settings.json"

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), SETTINGS_FILE), encoding="utf-8") as _handle:
    SETTINGS = json.load(_handle)
# The stub's interpreter does not know the environment that holds openvino and numpy: put it first.
for _path in reversed(SETTINGS["extra_sys_path"]):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        core = ov.Core()
        model = core.read_model(os.path.join(folder, SETTINGS["model_file"]))
        self.batch = int(SETTINGS["batch"])
        shapes = {}
        for port in model.inputs:
            shape = port.get_partial_shape()
            shape[0] = self.batch
            shapes[port.get_any_name()] = shape
        model.reshape(shapes)
        properties = {"INFERENCE_PRECISION_HINT": "f32"}
        if int(SETTINGS["intra_op_threads"]):
            properties["INFERENCE_NUM_THREADS"] = int(SETTINGS["intra_op_threads"])
        self.compiled = core.compile_model(model, "CPU", properties)
        self.request = self.compiled.create_infer_request()
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def _run(self, feed, rows):
        """Every output for ``rows`` rows of ``feed``, in chunks of the compiled batch (the last one padded)."""
        results = {name: [] for name in self.outputs}
        for start in range(0, rows, self.batch):
            chunk = {}
            for name, array in feed.items():
                part = array[start:start + self.batch]
                padded = np.zeros((self.batch,) + part.shape[1:], part.dtype)
                padded[:len(part)] = part
                chunk[name] = padded
            count = min(self.batch, rows - start)
            answer = self.request.infer(chunk)
            for name in self.outputs:
                results[name].append(np.array(answer[self.compiled.output(name)][:count], copy=True))
        return {name: np.concatenate(parts) for name, parts in results.items()}

    def execute(self, requests):
        # Run every request of the dynamic batch together, then split the results.
        arrays = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                  for name in self.inputs}
        sizes = [a.shape[0] for a in arrays[self.inputs[0]]]
        feed = {name: np.concatenate(parts) for name, parts in arrays.items()}
        results = self._run(feed, sum(sizes))
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(results[name][start:start + size]))
                       for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
