"""A real server on 127.0.0.1 with a tiny real diffusers model, driven by the real client."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from websockets.sync.client import connect

from easel.client.connection import Client, JobCancelled, JobFailed, new_job_id
from easel.client.protocol import GenerateRequest, Image, encode_image
from helpers.pictures import pixels, rgba_image

SIZE = 64


def canvas(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((SIZE, SIZE, 4), np.uint8)
    img[..., :3] = rng.integers(0, 255, (SIZE, SIZE, 3))
    img[..., 3] = 255
    return img


def req(**kw) -> GenerateRequest:
    kw.setdefault("prompt", "a red circle")
    kw.setdefault("steps", 3)
    kw.setdefault("seed", 42)
    return GenerateRequest(job=new_job_id(), **kw)


def test_welcome_describes_server(client):
    w = client.welcome
    assert w["protocol"] == 1 and w["device"] == "cpu"
    assert w["models"][0]["native"] == [SIZE, SIZE]
    assert {"euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "lcm"} <= set(w["schedulers"])
    assert w["limits"]["max_message_bytes"] >= 256 * 2**20 and w["limits"]["max_batch"] == 8


def test_txt2img_matches_raw_diffusers(client, tiny_sd_path):
    from diffusers import StableDiffusionPipeline

    result = client.generate(req(width=SIZE, height=SIZE))
    got = pixels(result.images[0].image)[..., :3]
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_path), torch_dtype=torch.float32)
    raw = pipe("a red circle", num_inference_steps=3, width=SIZE, height=SIZE,
               generator=torch.Generator("cpu").manual_seed(42)).images[0]
    diff = np.abs(got.astype(int) - np.asarray(raw).astype(int))
    assert diff.max() <= 1, f"server differs from raw diffusers by up to {diff.max()}"
    assert result.images[0].seed == 42 and (result.images[0].x, result.images[0].y) == (0, 0)


def test_img2img_and_inpaint_return_layers_at_offsets(client):
    base = canvas(1)
    r = client.generate(req(strength=0.5, x=10, y=20), rgba_image(base))
    assert (r.images[0].x, r.images[0].y) == (10, 20)  # the whole sent image comes back at its offset
    assert r.parameters["mode"] == "img2img"
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    r = client.generate(req(strength=1.0), rgba_image(base), Image.gray(SIZE, SIZE, mask.tobytes()))
    assert r.parameters["mode"] == "inpaint"


def test_seeds_are_reproducible_and_returned(client):
    a = client.generate(req(seed=-1))
    seed = a.images[0].seed
    assert 0 <= seed < 2**63
    b = client.generate(req(seed=seed))
    assert np.array_equal(pixels(a.images[0].image), pixels(b.images[0].image))


def test_batch_uses_consecutive_seeds(client):
    r = client.generate(req(seed=100, batch=3))
    assert [i.seed for i in r.images] == [100, 101, 102]
    single = client.generate(req(seed=101))
    diff = np.abs(pixels(r.images[1].image).astype(int) - pixels(single.images[0].image).astype(int))
    assert diff.max() <= 1


def test_progress_with_previews(client):
    events = []
    client.generate(req(steps=4), on_progress=events.append)
    denoise = [e for e in events if e.stage == "denoise"]
    assert [e.step for e in denoise] == [1, 2, 3, 4] and all(e.total == 4 for e in denoise)
    assert all(e.preview is not None and e.preview.width > 0 for e in denoise)


def test_cancel_running_job_within_one_step(client):
    job = client.submit(req(steps=150, width=256, height=256))
    steps_at_cancel = None
    last_step = 0
    for event in client.events(timeout=60):
        if event.type == "progress" and event.data["stage"] == "denoise":
            last_step = event.data["step"]
            if steps_at_cancel is None:
                steps_at_cancel = last_step
                client.cancel(job)
        if event.type in ("cancelled", "result", "error"):
            break
    assert event.type == "cancelled" and event.job == job
    assert last_step - steps_at_cancel <= 1, "job ran on for more than one step after cancel"


def test_cancel_queued_job_at_once(served):
    url = served[0]
    with Client(url) as a, Client(url) as b:
        long_job = a.submit(req(steps=150, width=256, height=256))
        queued = b.submit(req())
        t0 = time.monotonic()
        b.cancel(queued)
        kinds = [e.type for e in _until(b, queued)]
        assert kinds[-1] == "cancelled" and time.monotonic() - t0 < 2
        a.cancel(long_job)
        assert [e.type for e in _until(a, long_job)][-1] == "cancelled"


def _until(client, job):
    for event in client.events(timeout=60):
        if event.job == job:
            yield event
            if event.type in ("cancelled", "result", "error"):
                return


def test_loop_stays_responsive_during_inference(served):
    url = served[0]
    with Client(url) as busy, Client(url) as other:
        job = busy.submit(req(steps=40, width=128, height=128))
        next(e for e in busy.events(timeout=60) if e.type == "progress")
        t0 = time.monotonic()
        other.models()
        assert time.monotonic() - t0 < 1.0
        busy.cancel(job)
        list(_until(busy, job))


BAD = [
    ({"model": "nope"}, None, None, "model"),
    ({"scheduler": "warp"}, None, None, "scheduler"),
    ({"strength": 1.5}, None, None, "strength"),
    ({"steps": 0}, None, None, "steps"),
    ({"width": 0}, None, None, "width"),
    ({"width": 100000}, None, None, "width"),
    ({"batch": 9}, None, None, "batch"),
    ({}, rgba_image(canvas()), Image.gray(8, 8, bytes(64)), "mask"),
    ({}, Image(4, 4, "png", b"not a png at all"), None, "image"),
]


@pytest.mark.parametrize("patch, image, mask, field", BAD)
def test_bad_requests_name_the_field_and_the_connection_survives(client, patch, image, mask, field):
    base = req().to_message()
    base.update(patch)
    frames = [json.dumps({**base, "attachments": [n for n, v in (("image", image), ("mask", mask)) if v]})]
    frames += [encode_image(v) for v in (image, mask) if v is not None]
    for f in frames:
        client._ws.send(f)
    event = next(e for e in client.events(timeout=30) if e.type in ("error", "result"))
    assert event.type == "error" and event.data["field"] == field, event.data
    assert field in event.data["message"] or event.data["field"] == field
    assert client.models()  # still serving on this connection


@pytest.mark.parametrize("frame, field", [
    ("{not json", "json"), ('{"type": "teleport"}', "type"), ('{"type": "generate", "prompt": "x"}', "job"),
    ('{"type": "generate", "job": "x"}', "prompt"), (b"\x00\x01binary junk", "attachments"),
])
def test_malformed_frames_get_errors(client, frame, field):
    client._ws.send(frame)
    event = next(e for e in client.events(timeout=10) if e.type == "error")
    assert event.data["field"] == field
    assert client.models()


def test_unknown_protocol_version_is_refused(served):
    with connect(served[0]) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": 99}))
        reply = json.loads(ws.recv(10))
        assert reply["type"] == "error" and reply["code"] == "unsupported_protocol"
        assert "version 1" in reply["message"]


def test_failed_job_raises_with_field(client):
    with pytest.raises(JobFailed) as err:
        client.generate(req(model="missing-model"))
    assert err.value.field == "model"


def test_clients_are_served_in_arrival_order(served):
    url = served[0]
    clients = [Client(url).__enter__() for _ in range(3)]
    try:
        blocker = clients[0].submit(req(steps=8, width=128, height=128))
        jobs = [c.submit(req(steps=1)) for c in clients[1:]]
        finished: list[tuple[float, str]] = []

        def wait(c, job):
            for e in _until(c, job):
                if e.type == "result":
                    finished.append((time.monotonic(), job))

        threads = [threading.Thread(target=wait, args=(c, j)) for c, j in zip(clients, [blocker, *jobs])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [j for _, j in sorted(finished)] == [blocker, *jobs]
    finally:
        for c in clients:
            c.close()


def test_cancelled_exception_from_generate(served):
    with Client(served[0]) as c:
        def cancel_soon(p):
            if p.stage == "denoise":
                c.cancel(p.job)
        with pytest.raises(JobCancelled):
            c.generate(req(steps=50, width=128, height=128), on_progress=cancel_soon)


def test_regenerate_selection_changes_only_the_selection(client):
    """A soft-edged selection in a corner of a 200x150 canvas sent at document offset (30, 40)."""
    from easel.server.imaging.compose import LayerResult, flatten

    rng = np.random.default_rng(5)
    base = np.dstack([rng.integers(0, 255, (150, 200, 3), dtype=np.uint8), np.full((150, 200), 255, np.uint8)])
    mask = np.zeros((150, 200), np.uint8)
    mask[100:150, 150:200] = 255  # touches the bottom-right canvas edge
    mask[95:100, 150:200] = 128  # a soft band
    r = client.generate(req(x=30, y=40, strength=1.0), rgba_image(base), Image.gray(200, 150, mask.tobytes()))
    layer = r.images[0]
    rgba = pixels(layer.image)
    assert layer.x >= 30 + 140 and layer.y >= 40 + 85  # only the selection's neighbourhood comes back
    assert layer.x + rgba.shape[1] == 30 + 200 and layer.y + rgba.shape[0] == 40 + 150
    flat = flatten(base, LayerResult(rgba.copy(), layer.x, layer.y), origin=(30, 40))
    alpha = np.zeros((150, 200), np.uint8)
    alpha[layer.y - 40:, layer.x - 30:] = rgba[..., 3]
    assert np.array_equal(flat[alpha == 0], base[alpha == 0]), "pixels outside the blend changed"
    assert (alpha[mask == 255] == 255).all(), "the inside of the selection must be fully replaced"
    assert not np.array_equal(flat[mask == 255], base[mask == 255])
