"""ONNX export of the generator and reconstruction networks: parity, in-graph processing, refusal.

Real networks (training.gan / training.recon) at a small size so each export takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from export.onnx_export import (  # noqa: E402
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    ExportError,
    GeneratorGraph,
    ParityError,
    export_generator,
    export_reconnet,
    export_to_onnx,
    generator_spec,
    keep_outputs,
    measure_parity,
)
from surrogate.model_repo import create_session  # noqa: E402
from surrogate.noise import z_batch  # noqa: E402
from surrogate.schema import DEFAULT_SCHEMA, AttributeSchema  # noqa: E402
from training.gan.config import ModelConfig as GanModelConfig  # noqa: E402
from training.gan.networks import Generator, from_began  # noqa: E402
from training.recon.networks import ReconNet  # noqa: E402

torch.set_num_threads(1)


def small_generator(seed: int = 0, schema: AttributeSchema = DEFAULT_SCHEMA) -> Generator:
    torch.manual_seed(seed)
    return Generator(GanModelConfig(image_size=16, n=8), len(schema)).eval()


def small_reconnet(seed: int = 0) -> ReconNet:
    torch.manual_seed(seed)
    net = ReconNet(len(DEFAULT_SCHEMA), 12, image_size=16, width=0.25, head_features=32).eval()
    # Fresh heads start at constant outputs (bias 0.5, tiny weights): randomise so parity means something.
    for p in net.parameters():
        torch.nn.init.normal_(p, 0.0, 0.1)
    return net


@pytest.fixture(scope="module")
def generator() -> Generator:
    return small_generator()


@pytest.fixture(scope="module")
def exported_generator(generator):
    return export_generator(generator, DEFAULT_SCHEMA)


def test_generator_graph_io_and_parity(exported_generator):
    exported = exported_generator
    assert [(s.name, s.dtype.name, s.shape) for s in exported.inputs] == [
        ("attributes", "float32", (-1, 10)), ("z", "float32", (-1, 64))]
    assert [(s.name, s.dtype.name, s.shape) for s in exported.outputs] == [("image", "uint8", (-1, 1, 16, 16))]
    report = exported.parity
    assert report.passed and report.tolerance == FP32_TOLERANCE
    assert report.batch_sizes == (1, 3, 17)
    assert 0 <= report.errors["image_float"] <= FP32_TOLERANCE
    assert report.uint8_max_level_diff["image"] <= 1
    assert exported.opset >= 17
    # the parity-only output is not part of the deployed graph
    assert [o.name for o in exported.model.graph.output] == ["image"]


def test_generator_graph_does_the_normalisation_and_quantisation(generator, exported_generator):
    """Natural-unit attributes in, exactly the training code's uint8 pixels out (from_began)."""
    session = create_session(exported_generator.to_bytes())
    rng = np.random.default_rng(5)
    values = rng.uniform(DEFAULT_SCHEMA.lows, DEFAULT_SCHEMA.highs, size=(6, len(DEFAULT_SCHEMA))).astype(np.float32)
    z = z_batch(list(range(6)))
    (image,) = session.run(["image"], {"attributes": values, "z": z})
    with torch.no_grad():
        y = torch.from_numpy(DEFAULT_SCHEMA.normalise(values))
        expected = from_began(generator(torch.from_numpy(z), y)).numpy()
    assert image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    assert (image != expected).mean() < 0.01


def test_out_of_range_attributes_are_clamped_in_graph(exported_generator):
    session = create_session(exported_generator.to_bytes())
    z = z_batch([1, 2])
    inside = np.stack([DEFAULT_SCHEMA.highs, DEFAULT_SCHEMA.lows]).astype(np.float32)
    outside = inside + np.where(inside > 0, 100.0, -100.0).astype(np.float32) * np.array([[1], [1]], np.float32)
    a = session.run(["image"], {"attributes": inside, "z": z})[0]
    b = session.run(["image"], {"attributes": outside, "z": z})[0]
    np.testing.assert_array_equal(a, b)


def test_dynamic_batch_runs_any_size(exported_generator):
    session = create_session(exported_generator.to_bytes())
    for n in (1, 2, 33):
        values = np.tile(DEFAULT_SCHEMA.lows, (n, 1))
        (image,) = session.run(["image"], {"attributes": values, "z": z_batch(list(range(n)))})
        assert image.shape == (n, 1, 16, 16)


def test_reexport_is_byte_identical(generator, exported_generator):
    again = export_generator(generator, DEFAULT_SCHEMA)
    assert again.to_bytes() == exported_generator.to_bytes()
    assert again.sha256 == exported_generator.sha256


def test_fp16_variant_within_its_tolerance(generator):
    exported = export_generator(generator, DEFAULT_SCHEMA, fp16=True)
    assert exported.precision == "fp16" and exported.parity.tolerance == FP16_TOLERANCE
    assert exported.parity.passed
    assert exported.parity.errors["image_float"] > 0  # really reduced precision, not a copy of fp32
    assert [s.dtype.name for s in exported.inputs] == ["float32", "float32"]
    assert exported.outputs[0].dtype.name == "uint8"


def test_legacy_exporter_matches_too(generator):
    exported = export_generator(generator, DEFAULT_SCHEMA, exporter="legacy", batch_sizes=(1, 4))
    assert exported.parity.passed and exported.exporter == "legacy"
    assert exported.outputs[0].shape == (-1, 1, 16, 16)


def test_parity_detects_a_different_network(generator):
    """The check must be able to fail: compare the ONNX of one generator with another generator."""
    spec = generator_spec(DEFAULT_SCHEMA)
    full = export_to_onnx(GeneratorGraph(generator, DEFAULT_SCHEMA), spec)
    other = GeneratorGraph(small_generator(seed=1), DEFAULT_SCHEMA)
    report = measure_parity(other, full, keep_outputs(full, ["image"]), spec, precision="fp32", batch_sizes=(2,))
    assert not report.passed
    assert report.errors["image_float"] > FP32_TOLERANCE
    assert "FAIL" in report.summary()


class TraceSpecialisedGenerator(torch.nn.Module):
    """A stand-in generator (same signature as contract 4) with Python-side randomness in forward:
    the trace freezes one draw as a constant, so exported and eager outputs disagree."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = small_generator()
        self.rng = np.random.default_rng(0)

    def forward(self, z, y):
        return self.inner(z, y) + float(self.rng.uniform(0.01, 0.02))


def test_exporter_refuses_a_model_that_fails_parity():
    with pytest.raises(ParityError, match="parity check failed, nothing written") as info:
        export_generator(TraceSpecialisedGenerator(), DEFAULT_SCHEMA, batch_sizes=(2,))
    assert not info.value.report.passed


def test_wrong_z_dimension_is_refused():
    torch.manual_seed(0)
    generator = Generator(GanModelConfig(image_size=16, n=8, z_dim=32, latent_dim=32), len(DEFAULT_SCHEMA))
    with pytest.raises(ExportError, match="z of size 32"):
        export_generator(generator, DEFAULT_SCHEMA)


@pytest.fixture(scope="module")
def exported_recon():
    net = small_reconnet()
    return net, export_reconnet(net, DEFAULT_SCHEMA, image_size=16, channels=1)


def test_recon_graph_io_units_and_parity(exported_recon):
    net, exported = exported_recon
    assert [(s.name, s.dtype.name, s.shape) for s in exported.inputs] == [("image", "uint8", (-1, 1, 16, 16))]
    assert [(s.name, s.shape) for s in exported.outputs] == [
        ("attributes", (-1, 10)), ("identity", (-1, 12)), ("lighting", (-1, 4))]
    assert exported.parity.passed
    assert set(exported.parity.errors) == {"attributes", "identity", "lighting", "attributes_normalised"}
    # uint8 in, natural units out: denormalisation happens in the graph
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 1, 16, 16), dtype=np.uint8)
    outputs = dict(zip(["attributes", "identity", "lighting"],
                       create_session(exported.to_bytes()).run(None, {"image": images}), strict=True))
    with torch.no_grad():
        raw = net(torch.from_numpy(images).float() / 127.5 - 1.0)
    expected = DEFAULT_SCHEMA.denormalise(raw["attributes"].clamp(0, 1).numpy())
    np.testing.assert_allclose(outputs["attributes"], expected, atol=1e-3)
    np.testing.assert_allclose(outputs["lighting"], raw["lighting"].numpy(), atol=1e-4)
    assert np.all(outputs["attributes"] >= DEFAULT_SCHEMA.lows - 1e-4)
    assert np.all(outputs["attributes"] <= DEFAULT_SCHEMA.highs + 1e-4)
    assert exported.facts["n_identity"] == 12 and exported.facts["image_size"] == 16


def test_recon_fp16_variant(exported_recon):
    net, _ = exported_recon
    exported = export_reconnet(net, DEFAULT_SCHEMA, image_size=16, channels=1, fp16=True, batch_sizes=(1, 5),
                               exporter="legacy")  # the legacy exporter is 5x faster on this network
    assert exported.parity.passed and exported.parity.max_error <= FP16_TOLERANCE
    assert exported.parity.max_error > 0


def test_recon_wrong_schema_is_refused(exported_recon):
    net, _ = exported_recon
    with pytest.raises(ExportError, match="predicts 10 attributes but the schema has 3"):
        export_reconnet(net, AttributeSchema.from_names(["yaw", "pitch", "roll"]), image_size=16, channels=1)


def test_exported_graph_carries_no_source_paths(exported_generator):
    model = onnx.load_from_string(exported_generator.to_bytes())
    assert all(len(node.metadata_props) == 0 and not node.doc_string for node in model.graph.node)
    assert b"onnx_export.py" not in exported_generator.to_bytes()


def test_shipped_models_carry_no_build_machine_paths():
    root = Path(__file__).resolve().parent.parent / "model_repository"
    for model in root.glob("*/*/model.onnx"):
        data = model.read_bytes()
        assert b"stack_trace" not in data and b".py\", line" not in data, model
