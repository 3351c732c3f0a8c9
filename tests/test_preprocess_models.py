"""The "From image" kinds made by models beyond depth and segmentation: line art and soft edges (controlnet-aux's
annotators, random weights saved like lllyasviel/Annotators), normal maps from the depth model (their geometry on
known depth maps), pose (ViTPose, and the OpenPose drawing at known coordinates); their errors, the download of
the annotators' files through a fake hub, and all four through a real server."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from easel.client.connection import Client
from easel.server import preprocess
from easel.server.engine.types import EngineError
from easel.server.preprocess import annotators, models, pose
from easel.server.preprocess.normals import normal_map
from helpers.fake_hub import FakeHub
from helpers.preprocess_models import (
    picture,
    pixels,
    png,
    save_random_annotators,
    save_tiny_depth_anything,
    save_tiny_vitpose,
)
from helpers.server_harness import REPO, inprocess_server
from helpers.tiny_models import make_fake_hub_cache

pytestmark = pytest.mark.usefixtures("hub_cache")  # weights come only from where a test puts them


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models folder with every kind's tiny weights in annotators/ (Annotators laid out like the hub repo)."""
    root = tmp_path_factory.mktemp("models")
    save_random_annotators(root / "annotators" / "Annotators")
    save_tiny_depth_anything(root / "annotators" / "Depth-Anything-V2-Small-hf")
    save_tiny_vitpose(root / "annotators" / "vitpose-base-simple")
    return root


def other_picture(height: int, width: int) -> np.ndarray:
    """A picture unlike ``picture()``: a bright diagonal band on dark."""
    y, x = np.mgrid[0:height, 0:width]
    return np.where((abs(x - y) < 6)[..., None], 240, 20).astype(np.uint8).repeat(3, axis=2)


# ----------------------------------------------------------------------------- each kind on tiny weights
@pytest.mark.parametrize("kind", ["lineart", "softedge", "normal", "pose"])
@pytest.mark.parametrize("size", [(45, 61), (37, 23)])
def test_each_kind_keeps_the_pictures_exact_size_and_follows_the_picture(models_dir, kind, size):
    reports: list[str] = []
    guide = preprocess.run(kind, picture(*size), [str(models_dir)], reports.append)
    other = preprocess.run(kind, other_picture(*size), [str(models_dir)])
    assert guide.shape == (*size, 3) and guide.dtype == np.uint8
    assert not np.array_equal(guide, other), "the guide does not depend on the picture"
    assert reports[-1] == f"running {kind}"
    models._loaded.clear()  # loaded afresh from the folder: the same guide
    assert np.array_equal(guide, preprocess.run(kind, picture(*size), [str(models_dir)]))


def test_line_guides_are_gray_and_normal_shares_the_loaded_depth_model(models_dir):
    for kind in ("lineart", "softedge"):
        guide = preprocess.run(kind, picture(), [str(models_dir)])
        assert np.array_equal(guide[..., 0], guide[..., 1]) and np.array_equal(guide[..., 0], guide[..., 2])
    preprocess.run("depth", picture(), [str(models_dir)])
    reports: list[str] = []
    preprocess.run("normal", picture(), [str(models_dir)], reports.append)
    assert reports == ["running normal"]  # no "loading": the depth model stays loaded for normal maps


def test_annotator_weights_are_found_in_the_hugging_face_cache(models_dir, hub_cache, tmp_path):
    make_fake_hub_cache(str(models_dir / "annotators" / "Annotators"), str(hub_cache), annotators.REPO)
    from_folder = preprocess.run("softedge", picture(), [str(models_dir)])
    assert np.array_equal(preprocess.run("softedge", picture(), [str(tmp_path)]), from_folder)


# ----------------------------------------------------------------------------- normal maps: known geometry
def test_flat_depth_faces_the_viewer():
    assert np.all(normal_map(np.full((9, 13), 3.5, np.float32)) == (128, 128, 255))


def test_a_depth_ramp_gives_one_colour_red_facing_left_green_facing_up():
    y, x = np.mgrid[0:40, 0:50].astype(np.float32)
    rightwards = normal_map(x)[1:-1, 1:-1]  # nearer to the right: the surface faces left (Sobel's edge rows differ)
    downwards = normal_map(y)[1:-1, 1:-1]  # nearer at the bottom: the surface faces up
    for ramp, tilted in ((rightwards, 0), (downwards, 1)):
        colours = {tuple(c) for c in ramp.reshape(-1, 3)}
        assert len(colours) == 1, colours
        colour = colours.pop()
        assert colour[tilted] > 128 and colour[1 - tilted] == 128 and 128 < colour[2] < 255, colour
    assert normal_map(x * 100.0).tolist() == normal_map(x).tolist()  # the depth's scale does not matter


# ----------------------------------------------------------------------------- pose: keypoints and drawing
def test_openpose_points_put_the_neck_between_the_shoulders_and_drop_unsure_points():
    keypoints = np.arange(34, dtype=np.float32).reshape(17, 2)
    scores = np.full(17, 0.9)
    scores[pose.COCO.index("left_wrist")] = 0.1
    points = pose.openpose_points(keypoints, scores)
    assert len(points) == 18 and points[0] == (0.0, 1.0)
    assert points[1] == ((10 + 12) / 2, (11 + 13) / 2)  # COCO 5 and 6: the shoulders
    assert points[2] == (12.0, 13.0) and points[5] == (10.0, 11.0)  # OpenPose 2 is the right shoulder
    assert points[7] is None  # the left wrist scored under the cut
    scores[pose.COCO.index("right_shoulder")] = 0.0
    assert pose.openpose_points(keypoints, scores)[1] is None  # no neck without both shoulders


def test_the_skeleton_lands_at_the_right_pixels_in_openposes_colours():
    points: list = [None] * 18
    points[1], points[2] = (40.0, 256.0), (200.0, 256.0)  # neck and right shoulder: limb 0, 160 px long
    canvas = pose.draw(points, 512, 512)
    limb = tuple(int(c * 0.6) for c in pose.COLOURS[0])
    assert tuple(canvas[256, 120]) == limb and tuple(canvas[259, 120]) == limb  # 4 px either side of its axis
    assert tuple(canvas[256, 40]) == pose.COLOURS[1] and tuple(canvas[256, 200]) == pose.COLOURS[2]  # the joints
    assert not canvas[250:263, 206:].any() and not canvas[:249].any() and not canvas[264:].any()  # black elsewhere
    small = pose.draw([None] * 18, 30, 20)
    assert small.shape == (30, 20, 3) and not small.any()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kind, words", [
    ("lineart", "its weights (sk_model.pth, sk_model2.pth) are neither in the models folders"),
    ("softedge", "fetch them once with `easel download lllyasviel/Annotators`"),
    ("normal", "fetch them once with `easel download depth-anything/Depth-Anything-V2-Small-hf`"),
    ("pose", "fetch them once with `easel download usyd-community/vitpose-base-simple`"),
])
def test_missing_weights_name_the_kind_and_the_download(tmp_path, kind, words):
    with pytest.raises(EngineError) as err:
        preprocess.run(kind, picture(), [str(tmp_path)])
    assert err.value.field == "kind" and err.value.code == "preprocessor_unavailable"
    assert f"kind {kind!r} is not available on this server" in str(err.value) and words in str(err.value)


def test_without_controlnet_aux_its_kinds_are_unavailable_and_say_how_to_install_it():
    code = ("import sys; sys.modules['controlnet_aux'] = None\n"  # as if it were not installed
            "from easel.server import preprocess\n"
            "print(sorted(preprocess.UNAVAILABLE), list(preprocess.KINDS))\n"
            "try:\n    preprocess.check_kind('softedge')\nexcept Exception as exc:\n    print(exc.field, exc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    kinds, error = r.stdout.splitlines()
    assert kinds == "['lineart', 'softedge'] ['canny', 'depth', 'segmentation', 'normal', 'pose']"
    assert error.startswith("kind kind 'softedge' is not available on this server: its annotator comes from "
                            "controlnet-aux, and controlnet_aux is not installed")
    assert annotators.INSTALL in error and "pip install '.[annotators]'" in error and "use one of canny, depth" in error


def test_the_subpackage_imports_without_the_packages_init(tmp_path, monkeypatch):
    package = tmp_path / "heavy_aux"
    (package / "light").mkdir(parents=True)
    (package / "__init__.py").write_text("import a_module_nobody_has\n")  # like controlnet-aux without torchvision
    (package / "util.py").write_text("VALUE = 7\n")
    (package / "light" / "__init__.py").write_text("from ..util import VALUE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(annotators, "LIBRARY", "heavy_aux")
    for name in ("heavy_aux", "heavy_aux.util", "heavy_aux.light"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert annotators.subpackage("light").VALUE == 7
    assert sys.modules["heavy_aux"].__path__ == [str(package)]


# ----------------------------------------------------------------------------- download and the protocol
def test_easel_download_fetches_only_the_annotator_files_it_uses(models_dir, tmp_path):
    repo = tmp_path / "Annotators"
    repo.mkdir()
    for name in annotators.files_needed():
        (repo / name).write_bytes((models_dir / "annotators" / "Annotators" / name).read_bytes())
    (repo / "body_pose_model.pth").write_bytes(b"\0" * 1000)  # another annotator's weights
    code = "import sys\nfrom easel.cli import main\nsys.exit(main(sys.argv[1:]))"
    with FakeHub({annotators.REPO: repo}) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        r = subprocess.run([sys.executable, "-c", code, "download", annotators.REPO, "--to",
                            str(tmp_path / "models" / "annotators")], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    target = tmp_path / "models" / "annotators" / "Annotators"
    assert sorted(f for f in os.listdir(target) if f != ".cache") == sorted(annotators.files_needed())
    guide = preprocess.run("lineart", picture(), [str(tmp_path / "models")])
    assert np.array_equal(guide, preprocess.run("lineart", picture(), [str(models_dir)]))


def test_the_new_kinds_through_a_real_server(models_dir):
    from easel.server.engine import Engine

    rgb = picture(37, 23)
    engine = Engine(["easel-demo"], device="cpu", dtype="float32", models_dir=str(models_dir))
    with inprocess_server(engine) as (url, _), Client(url) as client:
        for kind in ("lineart", "softedge", "normal", "pose"):
            progress = []
            guide = client.preprocess(kind, png(rgb), progress.append)
            assert (guide.width, guide.height) == (23, 37)
            assert np.array_equal(pixels(guide), preprocess.run(kind, rgb, [str(models_dir)])), kind
            assert progress[-1].message == f"running {kind}"
