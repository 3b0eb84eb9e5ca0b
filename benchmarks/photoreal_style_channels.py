"""Do expression edits that touch a few style channels move the person less than the shipped step in w?

StyleSpace edits (Wu et al., 2021): the synthesis network's 23 affine layers turn w into 6,752 style channels
s = A w + b, and a few channels of s often carry one local change (a smile, a brow) on their own. The graph
of ``surrogate.photoreal.synthesis_model`` takes an offset added to every style channel (its second input,
since version 6; zero offset: the network's own pixels). Per attribute of ``--plan``, the shipped step of ``t`` read-out
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
    """The method's synthesis graph (w and an offset on every style channel) at 512 px, and its styles."""

    def __init__(self) -> None:
        from surrogate.photoreal import HalfResolutionGenerator

        self.generator = HalfResolutionGenerator()
        self.layers = self.generator.layers
        self.channels = self.layers[-1].stop

    def styles(self, w: np.ndarray) -> np.ndarray:
        """s = A w + b for every layer, (N, channels)."""
        return np.concatenate([np.asarray(w, np.float32) @ layer.weight.T + layer.bias for layer in self.layers],
                              axis=1)

    def render(self, w: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """(N, 512, 512, 3) uint8 portraits of w (N, 512) with ``offset`` (N, channels) on the styles."""
        return self.generator.render(w, side=512, offset=offset)


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
    from surrogate.photoreal import PhotorealBackend, channel_spread, top_channels
    from surrogate.portraits import z_for_seeds

    backend = PhotorealBackend(routed=False)  # its directions' steps in w, as versions 1-5 edited
    renderer = StyleOffsetRenderer()
    identity = DlibIdentity()
    names = [n for n in backend.directions.names if n != "gender"]
    w0 = backend.base_latents(z_for_seeds([SEED_BASE + i for i in range(args.seeds)]))
    spread = channel_spread(renderer.layers, backend.base_latents(z_for_seeds(
        [NATURAL_BASE + i for i in range(args.natural)])))
    zero = np.zeros((len(w0), renderer.channels), np.float32)

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
        order = top_channels(offset[0], spread, max(counts))
        print(f"\n{name}, t = {t}; layers of the top {counts[0]} channels: "
              + ", ".join(f"{layer} x{n}" for layer, n in Counter(
                  layer.name for layer in renderer.layers for c in order[:counts[0]]
                  if layer.first <= c < layer.stop).most_common()))
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
