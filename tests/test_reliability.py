"""Nothing lost, nobody in, no crash on bad input: fuzzing, disconnects, many clients, auth."""

from __future__ import annotations

import json
import os
import random
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from easel.client.connection import Client, ClientError, new_job_id
from easel.client.protocol import GenerateRequest, Image, encode_message
from easel.server.engine import Engine
from easel.server.limits import Limits
from easel.server.results import ResultStore
from easel.server.security import Security, SecurityError
from helpers.pictures import pixels
from helpers.probes import wait_until
from helpers.server_harness import inprocess_server


@pytest.fixture(scope="module")
def engine(tiny_sd_path):
    return Engine([str(tiny_sd_path)], device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def served(engine, tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("results"))
    with inprocess_server(engine, store=store) as (url, app):
        yield url, app


def req(**kw) -> GenerateRequest:
    kw.setdefault("prompt", "a blue square")
    kw.setdefault("steps", 2)
    kw.setdefault("seed", 3)
    return GenerateRequest(job=new_job_id(), **kw)


# -- fuzzing ----------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
FIELDS = ["job", "prompt", "negative_prompt", "model", "steps", "guidance", "seed", "batch", "width", "height",
          "scheduler", "strength", "x", "y", "attachments", "protocol", "preview", "grow", "feather", "padding"]
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["generate", "cancel", "models", "fetch", "ack", "history", "hello", "zap"]) | st.text()},
    optional={f: json_values for f in FIELDS},
)
image_frames = st.builds(
    lambda fmt, w, h, payload, magic: struct.pack(">4sBBHII", magic, 1, fmt, 0, w, h) + payload,
    st.integers(0, 6), st.integers(0, 70000), st.integers(0, 5), st.binary(max_size=64),
    st.sampled_from([b"EZIM", b"EZIX"]),
)
frames = (
    messages.map(json.dumps)
    | messages.map(lambda m: json.dumps(m)[: max(1, len(json.dumps(m)) // 2)])  # truncated JSON
    | st.text(max_size=50)
    | st.binary(max_size=100)
    | image_frames
)


def valid_frames() -> list[list[str | bytes]]:
    image = Image.rgba(8, 8, bytes(range(256)))
    mask = Image.gray(8, 8, bytes(64))
    gen = GenerateRequest(job="fz", prompt="a red circle", steps=1, width=64, height=64).to_message()
    return [encode_message(gen, {"image": image, "mask": mask}), encode_message(gen),
            encode_message({"type": "cancel", "job": "fz"}), encode_message({"type": "fetch", "job": "fz"}),
            encode_message({"type": "history", "limit": 3})]


def mutated_frames(count: int, seed: int):
    """Seeded mutations of valid messages: truncation, bit flips, spliced bytes, dropped or
    repeated frames, JSON values swapped for other types."""
    rng = random.Random(seed)
    pool = valid_frames()
    odd_values = [None, True, -1, 2**64, 1e309, "", "x" * 300, [], {}, [1, 2], {"a": 1}, 0.5]
    for _ in range(count):
        frames_ = list(rng.choice(pool))
        i = rng.randrange(len(frames_))
        frame = frames_[i]
        how = rng.randrange(5)
        if isinstance(frame, str) and how < 2:
            data = json.loads(frame)
            key = rng.choice(list(data))
            data[key] = rng.choice(odd_values)
            frame = json.dumps(data)
        elif how == 2:
            frame = frame[: rng.randrange(len(frame) + 1)]
        elif how == 3:
            raw = bytearray(frame.encode() if isinstance(frame, str) else frame)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            frame = bytes(raw) if isinstance(frames_[i], bytes) else raw.decode("utf-8", "replace")
        else:
            frames_.insert(i, frame)  # a repeated frame
        frames_[i] = frame
        if rng.random() < 0.2:
            del frames_[rng.randrange(len(frames_))]  # a dropped frame
        yield from frames_


def test_fuzzed_frames_never_break_the_server(engine):
    # small limits, so a fuzzed frame that happens to be a valid job stays a tiny job
    limits = Limits(max_side=128, max_steps=4, max_batch=2)
    replies: list[dict] = []
    with inprocess_server(engine, limits) as (url, app):
        with connect(url, max_size=None, compression=None) as ws:
            ws.send(json.dumps({"type": "hello", "protocol": 1}))

            def drain() -> None:  # read every reply, so the server never waits on us
                try:
                    for frame in ws:
                        if isinstance(frame, str):
                            replies.append(json.loads(frame))
                except ConnectionClosed:
                    pass

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            sent = {"n": 0}

            @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(frame=frames)
            def send(frame):  # structured garbage: every field with every JSON type
                ws.send(frame)
                sent["n"] += 1

            send()
            for frame in mutated_frames(3000, seed=1234):  # broken versions of valid frames
                ws.send(frame)
                sent["n"] += 1
            ws.send(json.dumps({"type": "models"}))  # a protocol error can swallow one pending frame
            ws.send(json.dumps({"type": "models"}))
            deadline = time.monotonic() + 60
            while not any(r.get("type") == "models" for r in replies) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert sent["n"] >= 3400
        assert any(r.get("type") == "models" for r in replies), "the fuzzed connection stopped answering"
        errors = [r for r in replies if r.get("type") == "error"]
        assert errors and all(r.get("message") for r in errors)
        assert not any(r.get("code") == "internal" for r in errors), [r for r in errors if r["code"] == "internal"]
        with Client(url, image_format="rgba") as normal:  # and a normal job still works
            result = normal.generate(req())
            assert pixels(result.images[0].image).shape == (64, 64, 4)


def test_oversized_frame_closes_only_that_connection(engine):
    with inprocess_server(engine, Limits(max_message_bytes=2**20)) as (url, app):
        with Client(url) as big:
            big._ws.send(b"\0" * (2**20 + 100))
            with pytest.raises((ClientError, ConnectionClosed)):
                big.models()
        with Client(url) as other:
            assert other.welcome["limits"]["max_message_bytes"] == 2**20
            assert other.models()


# -- nothing lost -----------------------------------------------------------------------------
def test_disconnect_mid_job_then_fetch(served):
    url = served[0]
    request = req(steps=30, width=128, height=128, seed=11)
    with Client(url, image_format="rgba") as first:
        first.submit(request)
        next(e for e in first.events(timeout=60) if e.type == "progress")
    # the client is gone; the job goes on. A new connection fetches it by id.
    with Client(url, image_format="rgba") as second:
        result_event = None
        deadline = time.monotonic() + 120
        while result_event is None and time.monotonic() < deadline:
            second.send({"type": "fetch", "job": request.job})
            for event in second.events(timeout=120):
                if event.job != request.job:
                    continue
                if event.type == "result":
                    result_event = event
                    break
                if event.type == "status":  # still running: its result now comes here
                    continue
                if event.type == "error":
                    time.sleep(0.2)
                    break
        assert result_event is not None, "the finished result was lost"
        again = second.generate(req(steps=30, width=128, height=128, seed=11))
        assert np.array_equal(pixels(result_event.images["image0"]), pixels(again.images[0].image))
        second.send({"type": "ack", "job": request.job})
        acked = next(e for e in second.events(timeout=10) if e.type == "acked")
        assert acked.data["found"] is True


def test_results_are_on_disk_before_they_are_sent(served):
    app = served[1]
    with Client(served[0]) as c:
        r = c.generate(req(prompt="a green triangle", seed=5))
    folder = app.store.folder / r.job
    assert (folder / "result.json").exists() and (folder / "image-0.png").exists()
    from PIL import Image as PILImage

    text = PILImage.open(folder / "image-0.png").text["parameters"]
    assert text.startswith("a green triangle\n") and "Seed: 5" in text and "Steps: 2" in text


def test_queued_jobs_of_a_disconnected_client_are_dropped(served):
    url, app = served
    with Client(url) as holder:
        blocker = holder.submit(req(steps=40, width=128, height=128))
        with Client(url) as leaver:
            queued = [leaver.submit(req()) for _ in range(3)]
            acks: list[str] = []
            for event in leaver.events(timeout=30):
                acks.append(event.job)
                if len(acks) == 3:
                    break
            assert sorted(acks) == sorted(queued) and all(j in app.queue for j in queued)
        assert wait_until(lambda: not any(j in app.queue for j in queued), timeout=30, step=0.05)
        assert app.running_job(blocker) is not None, "the queue emptied by running them, not by dropping them"
        holder.cancel(blocker)


def test_eight_clients_five_jobs_each_none_lost_or_duplicated(served):
    url = served[0]
    got: dict[int, list[str]] = {}
    sent: dict[int, list[str]] = {}

    def run(i: int) -> None:
        with Client(url) as c:
            jobs = [c.submit(req(steps=1, seed=i * 10 + k)) for k in range(5)]
            sent[i] = jobs
            seen = []
            for event in c.events(timeout=120):
                if event.type == "result":
                    seen.append(event.job)
                    if len(seen) == 5:
                        break
            got[i] = seen

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(got) == list(range(8))
    for i in range(8):
        assert sorted(got[i]) == sorted(sent[i]), f"client {i} lost or got extra results"


# -- nobody in --------------------------------------------------------------------------------
def test_token_and_origin_rules(engine):
    security = Security(token="s3cret", allowed_origins=["https://painter.example"])
    with inprocess_server(engine, security=security) as (url, app):
        with pytest.raises(InvalidStatus) as err:
            connect(url).close()
        assert err.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            connect(url, additional_headers={"Authorization": "Bearer wrong"}).close()
        with Client(url, token="s3cret") as ok:
            assert ok.models()
        connect(url + "/?token=s3cret").close()
        with pytest.raises(InvalidStatus) as err:
            connect(url + "/?token=s3cret", origin="https://evil.example").close()
        assert err.value.response.status_code == 403
        connect(url + "/?token=s3cret", origin="https://painter.example").close()


def test_browser_pages_are_refused_by_default(served):
    with pytest.raises(InvalidStatus) as err:
        connect(served[0], origin="https://any-site.example").close()
    assert err.value.response.status_code == 403


def test_non_loopback_bind_needs_a_token():
    Security().check_bind("127.0.0.1")
    Security().check_bind("::1")
    with pytest.raises(SecurityError, match="--token"):
        Security().check_bind("0.0.0.0")
    Security(token="t").check_bind("0.0.0.0")


def test_result_store_retention_and_ids(tmp_path):
    store = ResultStore(tmp_path, max_count=2)
    meta = {"type": "result", "images": [{"seed": 1, "x": 0, "y": 0, "width": 2, "height": 2}], "parameters": {}}
    layer = np.zeros((2, 2, 4), np.uint8)
    for job in ("a", "b", "c"):
        store.save(job, {**meta, "job": job}, [layer])
    assert sorted(store.jobs()) == ["b", "c"]  # the oldest went over the count limit
    assert ResultStore(tmp_path).jobs() and store.get("c")[0]["job"] == "c"  # survives a restart
    assert not ResultStore.valid_id("../etc") and not ResultStore.valid_id("..")
    an_hour_ago = time.time() - 3600  # a stored result's age is its result.json's mtime
    for meta_path in tmp_path.glob("*/result.json"):
        os.utime(meta_path, (an_hour_ago, an_hour_ago))
    aged = ResultStore(tmp_path, max_age_s=60)
    aged.prune()
    assert aged.jobs() == []


def test_parameters_text_is_the_widely_read_format():
    from easel.server.results import parameters_text

    params = {"prompt": "a red circle", "negative_prompt": "blurry", "steps": 20, "scheduler": "euler",
              "guidance": 5.0, "model": "easel-demo", "strength": 1.0, "mode": "txt2img",
              "loras": [{"name": "ink.safetensors", "weight": 0.8}], "variation_seed": 9, "variation_strength": 0.3}
    text = parameters_text(params, seed=7, width=64, height=48)
    prompt, negative, rest = text.split("\n")
    assert prompt == "a red circle" and negative == "Negative prompt: blurry"
    assert rest.startswith("Steps: 20, Sampler: euler, CFG scale: 5.0, Seed: 7, Size: 64x48, Model: easel-demo")
    assert "Variation seed: 9, Variation seed strength: 0.3" in rest and "Lora: ink.safetensors:0.8" in rest
    params["controls"] = [{"kind": "lineart", "strength": 0.8, "start": 0.0, "end": 0.7},
                          {"kind": "depth", "model": "control_v11f1p_sd15_depth", "strength": 0.5, "start": 0.1,
                           "end": 1.0}]
    rest = parameters_text(params, seed=7, width=64, height=48).split("\n")[2]
    assert ('ControlNet 0: "Module: lineart, Weight: 0.8, Guidance Start: 0.0, Guidance End: 0.7", ControlNet 1: '
            '"Module: depth, Model: control_v11f1p_sd15_depth, Weight: 0.5, Guidance Start: 0.1, Guidance End: 1.0"'
            ) in rest
