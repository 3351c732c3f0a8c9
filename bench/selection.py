"""Selection scaling: regenerating a 512² selection on 1024², 4096² and 8192² canvases.

Each job goes the way a plugin sends it: ``editing.read_plan`` picks the region
(``imaging.send_region``: the selection plus context, 768² here), the plugin reads just those pixels
from the canvas and the selection cropped to them (``editing.plan_request``: raw RGBA + gray8 mask),
and the result layer comes back as raw RGBA. Timed from reading the region to the decoded layer,
canvases in turns. The server runs the tiny SD (native 512), so the 768² region is diffused at 512²
and scaled back. The last row is what an old plugin that sends the whole 8192² canvas pays instead.
"""

from __future__ import annotations

import time

import numpy as np

from . import fixtures
from .common import Row, check, interleaved, med, paired_ratio

SELECTION = 512
STEPS = 4


def make_canvas(size: int) -> np.ndarray:
    """An RGBA canvas of ``size``² (a 1024² painting tiled; building 8192² from scratch is slow)."""
    tile = fixtures.canvas(min(size, 1024))
    reps = -(-size // tile.shape[0])
    return np.ascontiguousarray(np.tile(tile, (reps, reps, 1))[:size, :size])


class Plugin:
    """What the Krita/GIMP adapters do around ``editing``: read pixels, plan, send, decode the layer."""

    def __init__(self, url: str):
        from easel.client.connection import Client

        self.client = Client(url, image_format="rgba", client_name="easel-plugin/bench")
        self.client.connect()
        self.timings: list[dict[str, float]] = []

    def regenerate(self, canvas: np.ndarray, selection: tuple[int, int, int, int], whole: bool = False) -> tuple:
        from easel.client.editing import EditorState, Params, plan_request, read_plan

        height, width = canvas.shape[:2]
        mode, region = read_plan(width, height, selection, strength=1.0)
        if whole:  # an old plugin: the whole canvas and a canvas-sized mask
            region = (0, 0, width, height)
        x, y, w, h = region
        pixels = canvas[y:y + h, x:x + w].tobytes()
        mask = np.zeros((h, w), np.uint8)
        sx, sy, sw, sh = selection
        mask[sy - y:sy - y + sh, sx - x:sx - x + sw] = 255
        state = EditorState(width, height, pixels, region, mask.tobytes())
        planned = plan_request(state, Params(fixtures.PROMPT, steps=STEPS, seed=7))
        result = self.client.generate(planned.request, planned.image, planned.mask)
        self.timings.append(result.timings)
        layer = result.images[0]
        rgba = np.frombuffer(layer.image.data, np.uint8).reshape(layer.image.height, layer.image.width, 4)
        return mode, region, (layer.x, layer.y), rgba

    def close(self) -> None:
        self.client.close()


def run(quick: bool = False) -> list[Row]:
    spec = fixtures.tiny_sd(512)
    sizes = (1024, 4096, 8192)
    canvases = {size: make_canvas(size) for size in sizes}
    # near the middle, at the same place in the 1024² tile: every canvas shows the model the same pixels
    selections = {size: (256 + 1024 * (size // 2048),) * 2 + (SELECTION, SELECTION) for size in sizes}
    engine = fixtures.engine_for(spec)
    rows = []
    with fixtures.serve(engine) as (url, _):
        plugin = Plugin(url)
        try:
            first = {size: plugin.regenerate(canvases[size], selections[size]) for size in sizes}
            for mode, region, _origin, rgba in first.values():
                assert mode == "inpaint" and region[2:] == (768, 768), (mode, region)
                assert np.array_equal(rgba, first[sizes[0]][3]), "the layer should not depend on the canvas"
            fns = {size: (lambda s=size: plugin.regenerate(canvases[s], selections[s])) for size in sizes}
            times = interleaved(fns, 2 if quick else 5, warmup=0)
            for size in sizes:
                rows.append(Row("selection", f"512² selection on a {size}² canvas", 1000 * med(times[size]), "ms",
                                note=f"sends the {first[size][1][2]}x{first[size][1][3]} region, {STEPS} steps"))
            ratio = paired_ratio(times[sizes[-1]], times[sizes[0]])
            t = {k: med([d[k] for d in plugin.timings]) for k in plugin.timings[0]}
            rows.append(check("selection", f"{sizes[-1]}² canvas / {sizes[0]}² canvas", ratio, "×", "<= 1.2",
                              f"same layer on every canvas; server per job: engine {t['run_s']:.2f} s, "
                              f"prepare {1000 * t['prepare_s']:.0f} ms, composite {1000 * t['compose_s']:.0f} ms, "
                              f"total {t['total_s']:.2f} s"))
            if not quick:
                t0 = time.perf_counter()
                plugin.regenerate(canvases[8192], selections[8192], whole=True)
                whole = time.perf_counter() - t0
                rows.append(Row("selection", "same, old plugin sending the whole 8192² canvas", 1000 * whole, "ms",
                                note=f"{whole / med(times[8192]):.1f}x the region-only job; 256 MiB image + 64 MiB "
                                     "mask sent (one run)"))
        finally:
            plugin.close()
    engine.close()
    return rows
