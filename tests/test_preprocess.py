"""Control-layer guides made from a picture (server/easel/server/preprocess): canny against OpenCV, depth and
segmentation on tiny random-weight transformers models found in a models folder, the ``preprocess`` message
on a real server and ``easel control-image`` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from easel.client.connection import Client, JobFailed
from easel.server import preprocess
from easel.server.engine.types import EngineError
from easel.server.preprocess import models
from easel.server.preprocess.palette import ADE20K
from helpers.preprocess_models import picture, pixels, png, save_tiny_depth_anything, save_tiny_dpt, save_tiny_segformer
from helpers.server_harness import REPO, inprocess_server

pytestmark = pytest.mark.usefixtures("hub_cache")  # weights come only from where a test puts them


@pytest.fixture(scope="module")
def annotators(tmp_path_factory):
    """A models folder with the tiny models where a ComfyUI install keeps them: annotators/NAME."""
    root = tmp_path_factory.mktemp("models")
    save_tiny_depth_anything(root / "annotators" / "Depth-Anything-V2-Small-hf")
    save_tiny_segformer(root / "annotators" / "segformer-b0-finetuned-ade-512-512")
    return root


# ----------------------------------------------------------------------------- kinds, one by one
def test_canny_is_opencv_canny_in_all_three_channels():
    rgb = picture()
    guide = preprocess.run("canny", rgb)
    expected = cv2.Canny(rgb, 100, 200)
    assert guide.shape == rgb.shape and guide.dtype == np.uint8
    assert expected.any() and all(np.array_equal(guide[..., c], expected) for c in range(3))


def test_depth_from_a_models_folder_is_the_pictures_size_rgb_and_deterministic(annotators):
    rgb = picture()
    first = preprocess.run("depth", rgb, [str(annotators)])
    models._loaded.clear()  # loaded afresh from the folder: the same guide
    again = preprocess.run("depth", rgb, [str(annotators)])
    assert first.shape == rgb.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert np.array_equal(first[..., 0], first[..., 1]) and np.array_equal(first[..., 0], first[..., 2])
    assert first.min() == 0 and first.max() == 255  # stretched to the full range


def test_depth_takes_a_dpt_model_in_a_flat_folder(tmp_path):
    save_tiny_dpt(tmp_path / "dpt-hybrid-midas")
    reports: list[str] = []
    guide = preprocess.run("depth", picture(30, 20), [str(tmp_path)], reports.append)
    assert guide.shape == (30, 20, 3) and guide.dtype == np.uint8
    assert reports == ["loading dpt-hybrid-midas", "running depth"]


def test_segmentation_paints_ade20k_colours_at_the_pictures_size(annotators):
    rgb = picture()
    guide = preprocess.run("segmentation", rgb, [str(annotators)])
    assert guide.shape == rgb.shape and guide.dtype == np.uint8
    colours = {tuple(c) for c in guide.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in ADE20K} and len(colours) > 1
    models._loaded.clear()
    assert np.array_equal(guide, preprocess.run("segmentation", rgb, [str(annotators)]))


def test_a_segmentation_model_of_other_classes_is_refused(tmp_path):
    save_tiny_segformer(tmp_path / "annotators" / "upernet-convnext-small", num_labels=19)
    with pytest.raises(EngineError) as err:
        preprocess.run("segmentation", picture(), [str(tmp_path)])
    assert err.value.field == "kind" and "19 classes, not ADE20K's 150" in str(err.value)


def test_missing_weights_name_the_kind_and_the_download(tmp_path):
    with pytest.raises(EngineError) as err:
        preprocess.run("depth", picture(), [str(tmp_path)])
    assert err.value.field == "kind" and err.value.code == "preprocessor_unavailable"
    assert "not available on this server" in str(err.value)
    assert "easel download depth-anything/Depth-Anything-V2-Small-hf" in str(err.value)
    assert "annotators/NAME" in str(err.value)


def test_an_unknown_kind_names_the_field_and_the_choices():
    with pytest.raises(EngineError) as err:
        preprocess.run("sketchy", picture())
    assert err.value.field == "kind" and "unknown kind 'sketchy'" in str(err.value)
    assert "use one of canny, depth, segmentation, lineart, softedge, normal, pose" in str(err.value)


# ----------------------------------------------------------------------------- the protocol and the CLI
@pytest.fixture(scope="module")
def served(annotators):
    """A real server on 127.0.0.1 around the built-in demo model, the tiny annotators in its models folder."""
    from easel.server.engine import Engine

    engine = Engine(["easel-demo"], device="cpu", dtype="float32", models_dir=str(annotators))
    with inprocess_server(engine) as (url, app):
        yield url


def test_preprocess_answers_the_guide_with_progress(served, annotators):
    rgb = picture()
    progress = []
    with Client(served) as client:
        canny = client.preprocess("canny", png(rgb))
        depth = client.preprocess("depth", png(rgb), progress.append)
    assert np.array_equal(pixels(canny), preprocess.run("canny", rgb))
    assert (depth.width, depth.height) == (rgb.shape[1], rgb.shape[0])
    assert np.array_equal(pixels(depth), preprocess.run("depth", rgb, [str(annotators)]))
    assert progress and progress[-1].stage == "preprocess" and progress[-1].message == "running depth"


@pytest.mark.parametrize("message, field, words", [
    ({"kind": "lineart"}, "kind", "kind 'lineart' is not available on this server: its weights (sk_model.pth"),
    ({"kind": "depth", "job": ""}, "job", "'job' must be a non-empty string"),
])
def test_bad_preprocess_messages_get_an_error_naming_the_field(served, message, field, words):
    with Client(served) as client:
        client.send({"type": "preprocess", "job": "j1", **message}, {"image": png(picture())})
        event = next(e for e in client.events(timeout=30) if e.type == "error")
    assert event.data["field"] == field and words in event.data["message"]


def test_preprocess_without_a_picture_names_the_attachment(served):
    with Client(served) as client, pytest.raises(JobFailed) as err:
        client.send({"type": "preprocess", "job": "j2", "kind": "canny"})
        client.wait_for("j2")
    assert err.value.field == "image" and "attachment 'image'" in str(err.value)


def test_a_connection_waits_for_at_most_max_preprocess_guides(served):
    from easel.server.app import MAX_PREPROCESS
    from easel.server.preprocess import serve

    gate = threading.Event()
    blocker = serve._worker.submit(gate.wait, 60)  # the guide worker busy: every guide stays outstanding
    jobs = [f"g{i}" for i in range(MAX_PREPROCESS + 1)]
    try:
        with Client(served) as client:
            for job in jobs:
                client.send({"type": "preprocess", "job": job, "kind": "canny"}, {"image": png(picture())})
            refused = next(e for e in client.events(timeout=30) if e.type == "error")
            assert refused.job == jobs[-1] and refused.data["code"] == "queue_full", refused.data
            assert f"at most {MAX_PREPROCESS} 'preprocess' jobs" in refused.data["message"]
            gate.set()
            answered = {}
            for event in client.events(timeout=30):  # the others all answer once the worker is free
                if event.type in ("control_image", "error"):
                    answered[event.job] = event
                if len(answered) == MAX_PREPROCESS:
                    break
            assert sorted(answered) == jobs[:-1] and {e.type for e in answered.values()} == {"control_image"}
            guide = client.preprocess("canny", png(picture()))  # answered ones no longer count
            assert (guide.width, guide.height) == (61, 45)
    finally:
        gate.set()
        blocker.result(30)


def easel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "easel", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_control_image_cli_writes_the_guide(served, tmp_path):
    rgb = picture()
    PILImage.fromarray(rgb).save(tmp_path / "in.png")
    r = easel("control-image", "canny", "--image", str(tmp_path / "in.png"), "--out", str(tmp_path / "out.png"),
              "--url", served)
    assert r.returncode == 0, r.stderr
    written = np.asarray(PILImage.open(tmp_path / "out.png"))
    assert written.shape == rgb.shape and np.array_equal(written, preprocess.run("canny", rgb))
    assert "Traceback" not in r.stderr and f"{rgb.shape[1]}x{rgb.shape[0]}" in r.stdout


@pytest.mark.parametrize("kind, extra, code, words", [
    ("pose", [], 2, "easel control-image: kind 'pose' is not available on this server: its weights are neither"),
    ("canny", ["--out", "x.gif"], 2, "easel control-image: --out x.gif: cannot write .gif files"),
    ("canny", ["--image", "missing.png"], 2, "easel control-image: cannot read --image missing.png"),
])
def test_control_image_cli_errors_are_one_line(served, tmp_path, kind, extra, code, words):
    PILImage.fromarray(picture()).save(tmp_path / "in.png")
    flags = {"--image": str(tmp_path / "in.png"), "--out": str(tmp_path / "out.png"), "--url": served}
    flags.update(zip(extra[::2], extra[1::2]))
    r = easel("control-image", kind, *[x for kv in flags.items() for x in kv])
    assert r.returncode == code and r.stderr.strip().splitlines()[-1].startswith(words), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out.png").exists()


def test_docs_protocol_md_lists_the_kinds_as_declared():
    from easel.client.codes import PreprocessKind, enum_table

    text = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert enum_table(PreprocessKind, "kind", "guide") in text, "update the preprocess kinds table of docs/protocol.md"
