"""The Triton model repository writer and the ``surrogate export`` commands.

The CLI tests export real (small) checkpoints written in the GAN and recon helpers' own formats.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
pytest.importorskip("tritonclient.grpc")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from export.cli import export_command  # noqa: E402
from export.triton import (  # noqa: E402
    PYTHON_MODEL_FILE,
    PYTHON_MODEL_SETTINGS,
    RepositoryWriteError,
    ServingOptions,
    build_config,
    check_repository,
    compare_config_with_model,
    config_to_text,
    parse_version_policy,
    write_python_backend_repository,
)
from surrogate.model_repo import ModelRepository, TensorSpec  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema  # noqa: E402
from training.gan.checkpoint import save_checkpoint as save_gan_checkpoint  # noqa: E402
from training.gan.config import GanConfig  # noqa: E402
from training.gan.config import ModelConfig as GanModelConfig  # noqa: E402
from training.gan.networks import Generator  # noqa: E402
from training.recon.checkpoint import build_network  # noqa: E402
from training.recon.checkpoint import save_checkpoint as save_recon_checkpoint  # noqa: E402
from training.recon.config import ModelConfig as ReconModelConfig  # noqa: E402
from training.recon.config import ReconConfig  # noqa: E402

torch.set_num_threads(1)
LIGHT_LOW, LIGHT_HIGH = [-70.0, -15.0, 0.25, 0.15], [70.0, 60.0, 1.0, 0.65]


def gan_checkpoint(path, schema: AttributeSchema = DEFAULT_SCHEMA, seed: int = 0):
    torch.manual_seed(seed)
    config = GanConfig(model=GanModelConfig(image_size=16, n=8))
    generator = Generator(config.model, len(schema))
    save_gan_checkpoint(path, {"config": config.to_dict(), "schema": schema.to_json(),
                               "generator": generator.state_dict(), "step": 1234, "k_t": 0.05})
    return path


def recon_checkpoint(path):
    torch.manual_seed(0)
    config = ReconConfig(model=ReconModelConfig(image_size=16, width=0.25, head_features=32))
    net = build_network(config.to_dict(), 12, LIGHT_LOW, LIGHT_HIGH)
    for p in net.parameters():
        torch.nn.init.normal_(p, 0.0, 0.1)
    save_recon_checkpoint(path, {"config": config.to_dict(), "schema": DEFAULT_SCHEMA.to_json(), "n_identity": 12,
                                 "lighting_low": LIGHT_LOW, "lighting_high": LIGHT_HIGH,
                                 "model": net.state_dict(), "step": 77,
                                 "metrics_summary": {"eval_pose_mae_deg": 4.25}})
    return path


def invoke(*args: str):
    result = CliRunner().invoke(export_command, list(args), catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def exported_repo(tmp_path_factory):
    """gan_generator v1 (fp32) + v2 (fp16, TensorRT accelerator config) and recon v1, via the CLI."""
    root = tmp_path_factory.mktemp("export")
    gan = gan_checkpoint(root / "gan.pt")
    recon = recon_checkpoint(root / "recon.pt")
    repo = root / "model_repository"
    metrics = root / "evaluation.json"
    metrics.write_text(json.dumps({"summary": {"attribute_correlation": 0.91, "diversity_l1": 0.12}}))
    first = invoke("gan", "--checkpoint", str(gan), "--repository", str(repo), "--metrics", str(metrics))
    assert first.exit_code == 0, first.output
    second = invoke("gan", "--checkpoint", str(gan), "--repository", str(repo), "--fp16", "--tensorrt",
                    "--max-batch-size", "128", "--preferred-batch-sizes", "8,32", "--queue-delay-us", "500",
                    "--version-policy", "latest:2", "--data-description", "24,000 synthetic faces (seed 0)")
    assert second.exit_code == 0, second.output
    third = invoke("recon", "--checkpoint", str(recon), "--repository", str(repo))
    assert third.exit_code == 0, third.output
    return {"root": root, "repo": repo, "gan": gan, "recon": recon, "outputs": [first, second, third]}


def test_cli_reports_parity_and_writes_the_layout(exported_repo):
    repo = exported_repo["repo"]
    first, second, _ = exported_repo["outputs"]
    assert "parity: PASS fp32" in first.output
    assert "parity: PASS fp16" in second.output
    assert "its parity was NOT checked here" in " ".join(second.output.split())
    for path in ("gan_generator/config.pbtxt", "gan_generator/attributes.json", "gan_generator/MODEL_CARD.md",
                 "gan_generator/1/model.onnx", "gan_generator/2/model.onnx", "gan_generator/1/export.json",
                 "recon/config.pbtxt", "recon/1/model.onnx", "recon/MODEL_CARD.md"):
        assert (repo / path).is_file(), path
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(".")], "staging folders left behind"
    assert all((repo / m / "1" / "model.onnx").stat().st_size < 30e6 for m in ("gan_generator", "recon"))


def test_config_parses_with_tritons_protobuf_and_has_the_serving_settings(exported_repo):
    text = (exported_repo["repo"] / "gan_generator" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.name == "gan_generator" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 128
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.instance_group[0].count == 1
    assert config.version_policy.latest.num_versions == 2
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert [(t.name, list(t.dims)) for t in config.input] == [("attributes", [10]), ("z", [64])]
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == [
        ("image", "TYPE_UINT8", [1, 16, 16])]


def test_check_repository_compares_every_version_with_its_config(exported_repo):
    assert check_repository(exported_repo["repo"]) == {"gan_generator": [], "recon": []}
    result = invoke("check", str(exported_repo["repo"]))
    assert result.exit_code == 0 and "gan_generator: ok" in result.output


def test_config_graph_mismatch_is_found():
    f32 = np.dtype(np.float32)
    spec_in = [TensorSpec("attributes", f32, (-1, 10)), TensorSpec("z", f32, (-1, 64))]
    spec_out = [TensorSpec("image", np.dtype(np.uint8), (-1, 1, 16, 16))]
    config = build_config("m", spec_in, spec_out, ServingOptions())
    assert compare_config_with_model(config, spec_in, spec_out) == []
    wrong = [TensorSpec("image", np.dtype(np.float32), (-1, 1, 16, 16))]
    assert compare_config_with_model(config, spec_in, wrong) == ["output 'image': config uint8, model float32"]
    smaller = [spec_in[0], TensorSpec("z", np.dtype(np.float32), (-1, 32))]
    assert "config shape (-1, 64), model (-1, 32)" in compare_config_with_model(config, smaller, spec_out)[0]


def test_model_card_has_the_required_sections(exported_repo):
    card = (exported_repo["repo"] / "gan_generator" / "MODEL_CARD.md").read_text()
    for needle in ("## Training", "- Data:", "- Steps: 1234", "Training command: `surrogate train gan",
                   "## Metrics", "attribute_correlation", "## Versions", "## Intended use and limits",
                   "## Licence", "Apache-2.0", "| 1 |", "| 2 |", "fp16", "latest",
                   "- Data: 24,000 synthetic faces (seed 0)"):  # v2's --data-description
        assert needle in card, needle
    recon_card = (exported_repo["repo"] / "recon" / "MODEL_CARD.md").read_text()
    assert "eval_pose_mae_deg | 4.25" in recon_card  # from the checkpoint's metrics_summary
    assert "rendered on the fly" in recon_card


def test_export_info_records_provenance(exported_repo):
    repository = ModelRepository(exported_repo["repo"])
    info = repository.export_info("gan_generator", 2)
    assert info["precision"] == "fp16" and info["parity"]["passed"] is True
    assert info["parity"]["max_error"] <= 1e-2
    assert len(info["checkpoint_sha256"]) == 64 and len(info["model_sha256"]) == 64
    assert info["tensorrt_parity"].startswith("not checked")
    assert repository.export_info("gan_generator", 1)["parity"]["max_error"] <= 1e-4


def test_reexport_gives_identical_outputs(exported_repo, tmp_path):
    repo = tmp_path / "again"
    assert invoke("gan", "--checkpoint", str(exported_repo["gan"]), "--repository", str(repo)).exit_code == 0
    a = ModelRepository(exported_repo["repo"]).session("gan_generator", 1)
    b = ModelRepository(repo).session("gan_generator", 1)
    assert a.path.read_bytes() == b.path.read_bytes()
    rng = np.random.default_rng(0)
    feed = {"attributes": rng.uniform(DEFAULT_SCHEMA.lows, DEFAULT_SCHEMA.highs, (4, 10)).astype(np.float32),
            "z": rng.uniform(-1, 1, (4, 64)).astype(np.float32)}
    np.testing.assert_array_equal(a.run(feed)["image"], b.run(feed)["image"])


def test_existing_version_is_never_overwritten(exported_repo):
    repo = exported_repo["repo"]
    before = (repo / "gan_generator" / "1" / "model.onnx").read_bytes()
    result = invoke("gan", "--checkpoint", str(exported_repo["gan"]), "--repository", str(repo), "--version", "1")
    assert result.exit_code != 0 and "exists already" in result.output
    assert (repo / "gan_generator" / "1" / "model.onnx").read_bytes() == before


def test_incompatible_schema_needs_another_name(exported_repo, tmp_path):
    other = gan_checkpoint(tmp_path / "other.pt", AttributeSchema.from_names(["yaw", "pitch", "roll"]))
    result = invoke("gan", "--checkpoint", str(other), "--repository", str(exported_repo["repo"]))
    assert result.exit_code != 0 and "under another --name" in result.output
    assert invoke("gan", "--checkpoint", str(other), "--repository", str(exported_repo["repo"]),
                  "--name", "gan_pose_only").exit_code == 0
    assert ModelRepository(exported_repo["repo"]).schema("gan_pose_only").names == ("yaw", "pitch", "roll")


def test_failed_write_leaves_no_version_and_no_staging(exported_repo, tmp_path, monkeypatch):
    repo = tmp_path / "repo"

    def broken_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk full"):
        invoke("gan", "--checkpoint", str(exported_repo["gan"]), "--repository", str(repo))
    assert not (repo / "gan_generator" / "1").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_inputs_are_clear_errors(tmp_path):
    not_a_checkpoint = tmp_path / "x.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    result = invoke("gan", "--checkpoint", str(not_a_checkpoint), "--repository", str(tmp_path / "r"))
    assert result.exit_code == 1 and "cannot load the generator" in result.output
    gan = gan_checkpoint(tmp_path / "g.pt")
    result = invoke("gan", "--checkpoint", str(gan), "--repository", str(tmp_path / "r"),
                    "--preferred-batch-sizes", "8,999")
    assert result.exit_code == 2 and "must lie in [1, max_batch_size=256]" in result.output
    result = invoke("gan", "--checkpoint", str(gan), "--repository", str(tmp_path / "r"), "--version-policy", "newest")
    assert result.exit_code == 2 and "version policy 'newest'" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("text", "field", "value"), [
    ("all", "all", None), ("latest:3", "latest", 3), ("specific:1,4", "specific", [1, 4])])
def test_version_policies(text, field, value):
    policy = parse_version_policy(text)
    assert policy.WhichOneof("policy_choice") == field
    if field == "latest":
        assert policy.latest.num_versions == value
    if field == "specific":
        assert list(policy.specific.versions) == value


def test_python_backend_variant(exported_repo, tmp_path):
    out = write_python_backend_repository(exported_repo["repo"], tmp_path / "py", extra_sys_path=["/opt/x"])
    config = ModelRepository(out).config("gan_generator")
    assert config.backend == "python" and not config.platform
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_CPU"
    assert config.max_batch_size == 128  # batching and I/O carried over
    model_py = (out / "gan_generator" / "2" / "model.py").read_text()
    assert model_py == PYTHON_MODEL_FILE.read_text() and "class TritonPythonModel" in model_py
    settings = json.loads((out / "gan_generator" / "2" / PYTHON_MODEL_SETTINGS).read_text())
    assert settings == {"model_file": "model.onnx", "extra_sys_path": ["/opt/x"], "intra_op_threads": 1}
    assert (out / "gan_generator" / "2" / "model.onnx").read_bytes() == \
        (exported_repo["repo"] / "gan_generator" / "2" / "model.onnx").read_bytes()
    text = config_to_text(config)
    assert 'backend: "python"' in text
    with pytest.raises(RepositoryWriteError, match="not empty"):
        write_python_backend_repository(exported_repo["repo"], out)
