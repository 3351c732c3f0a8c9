"""Several workers in one server: ``--workers 2`` on the CPU, the fair queue feeding both.

The CUDA device list (``--device cuda:0,cuda:1``) is tested with torch.cuda mocked (no GPU here).
"""

from __future__ import annotations

import argparse

import pytest

from easel.client.connection import Client
from easel.server.engine import Engine
from easel.server.engine.types import EngineError
from easel.server.results import ResultStore
from helpers.scale_checks import (
    cancel_running,
    eight_clients_five_jobs,
    fairness_spread,
    plain_server_pixels,
    req,
    same_pixels,
)
from helpers.server_harness import inprocess_server, running_server


@pytest.fixture(scope="module")
def engines(tiny_sd_path):
    made = [Engine([str(tiny_sd_path)], device="cpu", dtype="float32") for _ in range(2)]
    yield made
    for e in made:
        e.close()


@pytest.fixture(scope="module")
def two_workers(engines, tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("results"))
    with inprocess_server(engines, store=store) as (url, app):
        yield url, app


def test_welcome_reports_the_workers(two_workers):
    with Client(two_workers[0]) as c:
        assert [w["name"] for w in c.welcome["workers"]] == ["w0", "w1"]
        assert all(w["device"] == "cpu" for w in c.welcome["workers"])


def test_eight_clients_five_jobs_on_two_workers(two_workers):
    per_worker = eight_clients_five_jobs(two_workers[0])
    assert set(per_worker) == {"w0", "w1"}, per_worker  # both did work


def test_fair_within_1_25x_on_two_workers(two_workers):
    spread = fairness_spread(two_workers[0])
    assert spread <= 1.25, f"slowest/fastest client median latency {spread:.2f}"


def test_cancel_on_two_workers(two_workers):
    cancel_running(two_workers[0])


def test_same_pixels_as_one_worker(two_workers, tiny_sd_path):
    kw = {"steps": 3, "seed": 42, "width": 64, "height": 64}
    reference = plain_server_pixels(tiny_sd_path, **kw)
    same_pixels(two_workers[0], reference, **kw)


def test_a_job_goes_to_the_worker_with_its_model_loaded(tiny_sd_path, tmp_path):
    from helpers.tiny_models import build_tiny_sd

    models = [str(tiny_sd_path), build_tiny_sd(tmp_path / "other-sd")]
    made = [Engine(models, device="cpu", dtype="float32") for _ in range(2)]
    try:
        second = made[0].models()[1].id
        made[1].load(second)  # w1 holds the second model, w0 the default after its first job
        made[0].load(None)
        loads = [e.load_count for e in made]
        with inprocess_server(made) as (url, _), Client(url, image_format="rgba") as c:
            for _ in range(3):
                assert c.generate(req(steps=1, model=second)).images
        assert [e.load_count for e in made] == loads, "a worker loaded a model another worker had"
    finally:
        for e in made:
            e.close()


def test_easel_serve_workers_2(tiny_sd_path):
    with running_server([str(tiny_sd_path)], "--workers", "2", "--device", "cpu") as url:
        with Client(url, image_format="rgba") as c:
            assert len(c.welcome["workers"]) == 2
            assert c.generate(req(steps=1)).images


# -- the device list: no GPU here, so torch.cuda is mocked -------------------------------------
def _args(device: str, workers: int = 1) -> argparse.Namespace:
    return argparse.Namespace(device=device, workers=workers)


def test_device_list_one_worker_per_gpu(monkeypatch):
    import torch

    from easel.cli.serve import worker_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker_devices(_args("cuda:0,cuda:1")) == ["cuda:0", "cuda:1"]
    assert worker_devices(_args("cuda:0, cuda:1", workers=2)) == ["cuda:0", "cuda:1"]
    assert worker_devices(_args("cpu", workers=3)) == ["cpu"] * 3
    for bad, words in [("cuda:0,cuda:2", "cuda:0..cuda:1"), ("cuda:0,cuda:0", "twice"),
                       ("cuda:0,cpu", "--workers"), ("cuda:0,,cuda:1", "empty"), ("tpu:0", "unknown")]:
        with pytest.raises(EngineError, match=words):
            worker_devices(_args(bad))
    with pytest.raises(EngineError, match="does not match"):
        worker_devices(_args("cuda:0,cuda:1", workers=3))
    # --workers 0 never gets here: the declared option refuses it (test_cli_bad_input)


def test_ray_flags_without_ray_and_replica_counts(monkeypatch):
    import sys

    from easel.server.rayserve.cluster import import_ray, parse_replicas

    assert parse_replicas("2") == (2, 2) and parse_replicas("1:4") == (1, 4)
    for bad in ("0", "3:2", "x", "1:y"):
        with pytest.raises(EngineError, match="--replicas"):
            parse_replicas(bad)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    with pytest.raises(EngineError, match=r"pip install 'ray\[serve\]' .*pip install '\.\[ray\]'"):
        import_ray()
