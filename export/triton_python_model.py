"""Triton Python-backend model: the version's model.onnx through onnxruntime.

``surrogate export python-backend`` copies this file into every version folder as ``model.py``, beside
the same ``model.onnx`` and a ``model_settings.json`` (``extra_sys_path``, ``intra_op_threads``). It
gives the outputs the onnxruntime backend would give, where only the Python backend exists (the
tritonserver bundled in nvidia-pytriton). It runs inside Triton's Python stub, never in this project's
processes: nothing here may import the project.
"""

import json
import os
import sys

SETTINGS_FILE = "model_settings.json"

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), SETTINGS_FILE), encoding="utf-8") as _handle:
    SETTINGS = json.load(_handle)
# The stub's interpreter does not know the environment that holds onnxruntime and numpy: put it first,
# before those imports.
for _path in reversed(SETTINGS["extra_sys_path"]):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(SETTINGS["intra_op_threads"])
        self.session = ort.InferenceSession(os.path.join(folder, SETTINGS["model_file"]), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        # Run every request of the dynamic batch as one onnxruntime call, then split the results.
        arrays = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                  for name in self.inputs}
        sizes = [a.shape[0] for a in arrays[self.inputs[0]]]
        feed = {name: np.concatenate(parts) for name, parts in arrays.items()}
        results = self.session.run(self.outputs, feed)
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value[start:start + size]))
                       for name, value in zip(self.outputs, results)]  # noqa: B905 - the stub may run Python 3.9
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
