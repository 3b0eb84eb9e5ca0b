"""Do expression edits that touch a few style channels move the person less than the shipped step in w?

StyleSpace edits (Wu et al., 2021): the synthesis network's 23 affine layers turn w into 6,752 style channels
s = A w + b, and a few channels of s often carry one local change (a smile, a brow) on their own. Here the
graph of ``surrogate.photoreal.synthesis_model`` gets a second input, an offset added to every style
channel (zero offset: the shipped pixels). Per attribute of ``--plan``, the shipped step of ``t`` read-out
units along the attribute's direction is turned into its style offset A (t d); that offset is kept on its
top ``m`` channels only (largest against the channel's spread over natural portraits) and scaled by
``alpha``; the shipped step is scaled by the same ``alpha`` values, so that the two compare at equal effect.
Each variant is rendered for ``--seeds`` fresh seeds, framed as the method frames, read by MediaPipe and
described by dlib. Printed per variant: how far MediaPipe's reading of the attribute moved, the mean leak
into the other readings (pose in tenths of a degree), dlib's descriptor distance to the
unedited render (median) and that distance per unit of effect, the figure to compare at equal effect.

    PYTHONPATH=. .venv/bin/python benchmarks/photoreal_style_channels.py --seeds 12 \\
        [--sheet docs/photoreal_style_channels.jpg]

About 100 s an attribute on 2 cores. ``--sheet`` also writes, for the first attribute, the unedited
renders, the shipped step and the top-``m`` edit at the two largest ``alpha`` for six seeds.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

SEED_BASE = 9_500_000_000  # fresh seeds, apart from the benchmarks' and the corpora's
NATURAL_BASE = 9_600_000_000
PLAN = "AU12:2.5,AU04:3,AU07:2.5,AU23:3,AU05:2"  # attribute:t (read-out units of the shipped step)


class StyleOffsetRenderer:
    """The portrait graph with ``offset`` (N, channels) added after each affine layer of the style input."""

    def __init__(self, batch: int = 4) -> None:
        import openvino as ov
        import openvino.opset13 as ops

        from surrogate.photoreal import synthesis_model
        from surrogate.portraits import compile_cpu

        self.batch = batch
        model = synthesis_model(batch=batch)
        style = model.get_parameters()[0]
        matmuls = sorted((t.get_node() for t in style.output(0).get_target_inputs()
                          if t.get_node().get_type_name() == "MatMul"),
                         key=lambda node: int(node.get_friendly_name().split("_")[1].split("/")[0]))
        self.layers: list[tuple[str, np.ndarray, np.ndarray, int, int]] = []
        start = 0
        for matmul in matmuls:
            weight = np.asarray(_constant(matmul.input_value(1).get_node()), np.float32)
            weight = weight if matmul.get_attributes().get("transpose_b", False) else weight.T
            add = next(iter(matmul.output(0).get_target_inputs())).get_node()
            bias = np.asarray(_constant(add.input_value(1).get_node()), np.float32).reshape(-1)
            self.layers.append((matmul.get_friendly_name().split("/")[0], weight, bias, start, start + len(weight)))
            start += len(weight)
        self.channels = start
        offset = ops.parameter([batch, start], ov.Type.f32, name="offset")
        for (_, _, _, first, stop), matmul in zip(self.layers, matmuls, strict=True):
            add = next(iter(matmul.output(0).get_target_inputs())).get_node()
            consumers = list(add.output(0).get_target_inputs())
            piece = ops.slice(offset, np.array([first]), np.array([stop]), np.array([1]), np.array([1]))
            shifted = ops.add(add.output(0), piece)
            for consumer in consumers:
                consumer.replace_source_output(shifted.output(0))
        self._compiled = compile_cpu(ov.Model(model.get_results(), [style, offset], "style_offsets"), 0)

    def styles(self, w: np.ndarray) -> np.ndarray:
        """s = A w + b for every layer, (N, channels)."""
        return np.concatenate([np.asarray(w, np.float32) @ a.T + b for _, a, b, _, _ in self.layers], axis=1)

    def render(self, w: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """(N, 512, 512, 3) uint8 portraits of w (N, 512) with ``offset`` (N, channels) on the styles."""
        from surrogate.portraits import PortraitGenerator

        return PortraitGenerator._run(self._compiled, np.asarray(w, np.float32), np.asarray(offset, np.float32))


def _constant(node):
    """A Constant's data, looking through a Convert (compressed weights)."""
    while not hasattr(node, "get_data"):
        node = node.input_value(0).get_node()
    return node.get_data()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", default=PLAN, help="attribute:t,... (t in read-out units of the shipped step)")
    parser.add_argument("--channels", default="10,30,100", help="top-m channel counts")
    parser.add_argument("--alphas", default="1,2,4", help="scales of the top-m offset")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--natural", type=int, default=2000, help="portraits for the channels' spread")
    parser.add_argument("--sheet", default="", help="PNG of the first attribute's edits (six seeds)")
    args = parser.parse_args()

    from surrogate.face_identity import DlibIdentity
    from surrogate.photoreal import PhotorealBackend
    from surrogate.portraits import z_for_seeds

    backend = PhotorealBackend()
    renderer = StyleOffsetRenderer()
    identity = DlibIdentity()
    names = [n for n in backend.directions.names if n != "gender"]
    w0 = backend.base_latents(z_for_seeds([SEED_BASE + i for i in range(args.seeds)]))
    spread = renderer.styles(backend.base_latents(z_for_seeds(
        [NATURAL_BASE + i for i in range(args.natural)]))).std(0) + 1e-6
    zero = np.zeros((len(w0), renderer.channels), np.float32)
    shipped = backend.generator.render(w0[:4], side=512)
    if not np.array_equal(renderer.render(w0[:4], zero[:4]), shipped):
        raise SystemExit("the style-offset graph does not give the shipped pixels at zero offset")

    def measure(offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        portraits = renderer.render(w0, offset)
        readings = [backend._reader.read(p) for p in portraits]
        read = np.array([r.array(names) if r is not None else np.full(len(names), np.nan) for r in readings])
        crops = [backend.frame(p, 0.0, r) for p, r in zip(portraits, readings, strict=True)]
        return read, identity.describe(crops)[0], np.stack(crops)

    base_read, base_desc, base_crops = measure(zero)
    counts = [int(m) for m in args.channels.split(",")]
    alphas = [float(a) for a in args.alphas.split(",")]
    print(f"{args.seeds} seeds, 256 px colour framing; MediaPipe effect, leak into the other readings "
          "(pose /10), dlib distance to the unedited render")
    for number, item in enumerate(args.plan.split(",")):
        name, t = item.split(":")
        k = names.index(name)
        step = renderer.styles(w0[:1] + float(t) * backend.directions.vectors[backend.directions.names.index(name)])
        offset = step - renderer.styles(w0[:1])  # linear in w: the same offset for every seed
        order = np.argsort(-np.abs(offset[0]) / spread)
        print(f"\n{name}, t = {t}; layers of the top {counts[0]} channels: "
              + ", ".join(f"{layer} x{n}" for layer, n in Counter(
                  layer for layer, _, _, first, stop in renderer.layers for c in order[:counts[0]]
                  if first <= c < stop).most_common()))
        print("| variant | effect | leak | dlib median | dlib per unit of effect |")
        print("|---|---|---|---|---|")
        # (label, offset, on the sheet)
        variants = [(f"shipped step in w x {a:g}", np.repeat(offset * a, len(w0), 0), a == 1) for a in alphas]
        for m in counts:
            mask = np.zeros(renderer.channels, np.float32)
            mask[order[:m]] = 1.0
            variants += [(f"top {m} channels x {a:g}", np.repeat(offset * mask * a, len(w0), 0),
                          m == counts[0] and a in alphas[-2:]) for a in alphas]
        sheet_rows = [base_crops]
        for label, variant, on_sheet in variants:
            read, desc, crops = measure(variant)
            delta = read - base_read
            effect = float(np.nanmean(delta[:, k]))
            others = np.delete(delta, k, axis=1) / np.array([10.0 if n in ("yaw", "pitch", "roll") else 1.0
                                                             for n in names if n != name])
            distance = float(np.median(np.linalg.norm(desc - base_desc, axis=1)))
            print(f"| {label} | {effect:.2f} | {np.nanmean(np.abs(others)):.2f} | {distance:.3f} | "
                  f"{distance / max(abs(effect), 1e-6):.3f} |", flush=True)
            if on_sheet:
                sheet_rows.append(crops)
        if args.sheet and number == 0:
            from PIL import Image

            tile = 192
            sheet = Image.new("RGB", (6 * tile, len(sheet_rows) * tile))
            for r, row in enumerate(sheet_rows):
                for c, crop in enumerate(row[:6]):
                    sheet.paste(Image.fromarray(crop).resize((tile, tile), Image.LANCZOS), (c * tile, r * tile))
            sheet.save(args.sheet, quality=88)  # JPEG keeps a sheet of photos small; PNG ignores quality
            print(f"rows: unedited, shipped step, top {counts[0]} x {alphas[-2]:g} and x {alphas[-1]:g}: "
                  f"{args.sheet}")


if __name__ == "__main__":
    main()
