"""Export trained networks to ONNX in a Triton model repository (``surrogate export``).

* ``export.onnx_export``: graphs with their pre/post-processing, torch.onnx export (dynamo or legacy),
  fp16 variant, and the parity check that refuses a model differing from torch (imports torch).
* ``export.triton``: config.pbtxt via Triton's own protobuf, versions, model cards, the Python-backend
  variant and a launcher for the real ``tritonserver`` from nvidia-pytriton (torch-free).
* ``export.cli``: the click commands. Reading a repository is ``surrogate.model_repo`` (torch-free).
"""
