"""surrogate.model_repo: the torch-free reader of the Triton model repository (contract 6).

The models here are tiny ONNX graphs built with onnx.helper (no torch), written through the real
repository writer (export.triton.add_version), so layout and reader are tested together.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tritonclient.grpc")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from export.triton import ModelCardInfo, ModelVersion, ServingOptions, add_version  # noqa: E402
from surrogate.model_repo import (  # noqa: E402
    ModelRepository,
    ModelRepositoryError,
    config_io,
    create_session,
)
from surrogate.schema import DEFAULT_SCHEMA  # noqa: E402


def affine_generator(offset: float, size: int = 4) -> bytes:
    """attributes (N, A) + z (N, 64) -> image uint8 (N, 1, size, size): a stand-in with contract 6's I/O.

    Each pixel is round(clip(offset + sum(normalised attributes) + z[0] * 10)), so inputs and the
    version (offset) are visible in the output.
    """
    a = len(DEFAULT_SCHEMA)
    inits = [
        numpy_helper.from_array(DEFAULT_SCHEMA.lows, "low"),
        numpy_helper.from_array(DEFAULT_SCHEMA.highs - DEFAULT_SCHEMA.lows, "span"),
        numpy_helper.from_array(np.array([offset], np.float32), "offset"),
        numpy_helper.from_array(np.array([10.0], np.float32), "ten"),
        numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
        numpy_helper.from_array(np.array([255.0], np.float32), "full"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([1], np.int64), "stop"),
        numpy_helper.from_array(np.ones((1, size * size), np.float32), "spread"),
        numpy_helper.from_array(np.array([-1, 1, size, size], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Sub", ["attributes", "low"], ["shifted"]),
        helper.make_node("Div", ["shifted", "span"], ["normalised"]),
        helper.make_node("ReduceSum", ["normalised", "axis1"], ["total"], keepdims=1),
        helper.make_node("Slice", ["z", "start", "stop", "axis1"], ["z0"]),
        helper.make_node("Mul", ["z0", "ten"], ["z10"]),
        helper.make_node("Add", ["total", "z10"], ["mixed"]),
        helper.make_node("Add", ["mixed", "offset"], ["value"]),
        helper.make_node("MatMul", ["value", "spread"], ["flat"]),
        helper.make_node("Clip", ["flat", "zero", "full"], ["clipped"]),
        helper.make_node("Round", ["clipped"], ["rounded"]),
        helper.make_node("Cast", ["rounded"], ["pixels"], to=TensorProto.UINT8),
        helper.make_node("Reshape", ["pixels", "shape"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes, "affine_generator",
        [helper.make_tensor_value_info("attributes", TensorProto.FLOAT, ["batch", a]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 1, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_model(repo, offset: float, *, name: str = "gan_generator", version: int | None = None, size: int = 4):
    data = ModelVersion(name, affine_generator(offset, size), DEFAULT_SCHEMA,
                        {"model": "gan_generator", "image_size": size, "channels": 1, "z_dim": 64},
                        {"precision": "fp32", "exporter": "test", "parity": {"max_error": 0.0, "tolerance": 1e-4}},
                        ModelCardInfo(kind="gan_generator", data="unit-test graph"))
    return add_version(repo, data, ServingOptions(max_batch_size=64, preferred_batch_sizes=(8,)), version=version)


@pytest.fixture()
def repository(tmp_path):
    path = tmp_path / "model_repository"
    write_model(path, 0.0)
    write_model(path, 100.0)
    return ModelRepository(path)


def inputs(n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"attributes": rng.uniform(DEFAULT_SCHEMA.lows, DEFAULT_SCHEMA.highs, (n, 10)).astype(np.float32),
            "z": rng.uniform(-1, 1, (n, 64)).astype(np.float32)}


def test_layout_names_versions_schema(repository):
    assert repository.model_names() == ["gan_generator"]
    assert repository.versions("gan_generator") == [1, 2]
    assert repository.latest_version("gan_generator") == 2
    assert repository.schema("gan_generator") == DEFAULT_SCHEMA
    assert repository.metadata("gan_generator")["image_size"] == 4
    assert "# Model card" in repository.model_card("gan_generator")
    assert repository.export_info("gan_generator", 1)["version"] == 1


def test_version_folders_are_readable_by_a_server_running_as_another_user(repository):
    for version in repository.versions("gan_generator"):
        mode = (repository.model_dir("gan_generator") / str(version)).stat().st_mode
        assert mode & 0o055 == 0o055, oct(mode)  # group and others may list and enter it


def test_config_is_tritons_protobuf_and_matches_the_graph(repository):
    config = repository.config("gan_generator")
    assert type(config).__name__ == "ModelConfig"
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
    declared_in, declared_out = config_io(config)
    model = repository.session("gan_generator")
    assert [(s.name, s.dtype, s.shape) for s in declared_in] == [(s.name, s.dtype, s.shape) for s in model.inputs]
    assert [(s.name, s.dtype, s.shape) for s in declared_out] == [(s.name, s.dtype, s.shape) for s in model.outputs]


def test_session_runs_newest_or_pinned_version(repository):
    feed = inputs()
    newest = repository.session("gan_generator")
    first = repository.session("gan_generator", version=1)
    assert (newest.version, first.version) == (2, 1)
    assert newest.name == "gan_generator" and newest.schema == DEFAULT_SCHEMA
    image_new, image_old = newest.run(feed)["image"], first.run(feed)["image"]
    assert image_new.dtype == np.uint8 and image_new.shape == (3, 1, 4, 4)
    assert np.all(image_new.astype(int) - image_old.astype(int) >= 99)  # version 2 adds 100
    assert repository.session("gan_generator") is newest  # cached
    assert newest.providers == ["CPUExecutionProvider"]


def test_run_accepts_lossless_casts(repository):
    model = repository.session("gan_generator")
    feed = inputs()
    as_float64 = {k: v.astype(np.float64) for k, v in feed.items()}
    np.testing.assert_array_equal(model.run(as_float64)["image"], model.run(feed)["image"])


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"attributes": np.zeros((2, 10), np.float32)}, "missing \\['z'\\]"),
        ({**inputs(2), "extra": np.zeros(2)}, "unknown \\['extra'\\]"),
        ({"attributes": np.zeros((2, 9), np.float32), "z": np.zeros((2, 64), np.float32)}, "dimension 1 must be 10"),
        ({"attributes": np.zeros(10, np.float32), "z": np.zeros((1, 64), np.float32)}, "expected 2 dimensions"),
        ({"attributes": np.zeros((2, 10), np.float32), "z": np.zeros((3, 64), np.float32)}, "disagree on the batch"),
        ({"attributes": np.array([["a"] * 10]), "z": np.zeros((1, 64), np.float32)}, "expected float32"),
    ],
)
def test_bad_inputs_name_the_input(repository, feed, message):
    with pytest.raises(ModelRepositoryError, match=message):
        repository.session("gan_generator").run(feed)


def test_errors_name_what_is_missing(tmp_path, repository):
    with pytest.raises(ModelRepositoryError, match="no such folder"):
        ModelRepository(tmp_path / "nope")
    with pytest.raises(ModelRepositoryError, match="no model 'recon' \\(models: gan_generator\\)"):
        repository.session("recon")
    with pytest.raises(ModelRepositoryError, match="no version 7 \\(versions: \\[1, 2\\]\\)"):
        repository.session("gan_generator", 7)


def test_broken_config_and_attributes_are_reported_with_the_file(repository):
    folder = repository.path / "gan_generator"
    (folder / "config.pbtxt").write_text('name: "gan_generator"\nmax_batch_size: "many"\n')
    with pytest.raises(ModelRepositoryError, match="config.pbtxt: not a valid Triton model config"):
        repository.config("gan_generator")
    (folder / "attributes.json").write_text(json.dumps({"attributes": [{"name": "yaw"}]}))
    with pytest.raises(ModelRepositoryError, match="attributes.json"):
        repository.schema("gan_generator")


def test_half_written_version_folders_are_ignored(repository):
    (repository.path / "gan_generator" / "3").mkdir()  # no model.onnx yet
    (repository.path / "gan_generator" / "notes").mkdir()
    assert repository.versions("gan_generator") == [1, 2]


def test_missing_provider_is_a_clear_error(repository):
    with pytest.raises(ModelRepositoryError, match="NoSuchExecutionProvider"):
        create_session(repository.model_path("gan_generator"), providers=["NoSuchExecutionProvider"])


def test_device_selects_providers(repository):
    assert repository.session("gan_generator", device="cpu").providers == ["CPUExecutionProvider"]
    auto = repository.session("gan_generator", device="auto")
    assert auto.providers[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in auto.providers:
        with pytest.raises(ModelRepositoryError, match="no CUDAExecutionProvider"):
            repository.session("gan_generator", device="cuda")
    with pytest.raises(ModelRepositoryError, match="unknown device 'tpu'"):
        repository.session("gan_generator", device="tpu")


def test_intra_op_threads_option(repository):
    model = repository.session("gan_generator", intra_op_threads=1)
    assert model is not repository.session("gan_generator")
    assert model.run(inputs())["image"].shape == (3, 1, 4, 4)


def test_reader_does_not_import_torch(repository):
    code = (
        "import sys\n"
        "from surrogate.model_repo import ModelRepository\n"
        f"r = ModelRepository({str(repository.path)!r})\n"
        "r.session('gan_generator'); r.config('gan_generator')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_python_backend_model_file_runs_each_version_like_onnxruntime(tmp_path, monkeypatch) -> None:
    """export/triton_python_model.py, as copied into a Python-backend repository, run with a stand-in for
    Triton's pb_utils: a dynamic batch of two requests gives the onnxruntime backend's images, split back."""
    import importlib.util
    import types

    from export.triton import write_python_backend_repository
    from service.demo_models import write_demo_repository
    from surrogate.noise import z_batch
    from surrogate.runtime import OnnxRuntimeBackend

    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self.name, self.array = name, array

        def as_numpy(self) -> np.ndarray:
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors: list[Tensor]) -> None:
            self.output_tensors = output_tensors

    def get_input_tensor_by_name(request: dict[str, np.ndarray], name: str) -> Tensor:
        return Tensor(name, request[name])

    pb_utils = types.SimpleNamespace(Tensor=Tensor, InferenceResponse=InferenceResponse,
                                     get_input_tensor_by_name=get_input_tensor_by_name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    monkeypatch.setattr(sys, "path", list(sys.path))
    repo = write_demo_repository(tmp_path / "repo", size=8)
    out = write_python_backend_repository(repo, tmp_path / "python", extra_sys_path=[str(tmp_path / "extra")])
    spec = importlib.util.spec_from_file_location("model", out / "gan_generator" / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sys.path[0] == str(tmp_path / "extra")  # the settings file reached sys.path before the imports

    model = module.TritonPythonModel()
    config = {"input": [{"name": "attributes"}, {"name": "z"}], "output": [{"name": "image"}]}
    model.initialize({"model_config": json.dumps(config), "model_repository": str(out / "gan_generator"),
                      "model_version": "1"})
    values = (np.tile(DEFAULT_SCHEMA.lows, (3, 1)) + np.linspace(0, 1, 3)[:, None]).astype(np.float32)
    z = z_batch([5, 6, 7])
    responses = model.execute([{"attributes": values[:2], "z": z[:2]}, {"attributes": values[2:], "z": z[2:]}])
    images = np.concatenate([r.output_tensors[0].as_numpy() for r in responses])
    assert [len(r.output_tensors[0].as_numpy()) for r in responses] == [2, 1]
    np.testing.assert_array_equal(images, OnnxRuntimeBackend(repo).generate(values, z))
