"""Soak test: a real ``easel serve`` under N random clients for M minutes (``make soak``; docs/performance.md).

``python -m bench.soak --minutes 10 --clients 8``. The server serves the built-in demo model; jobs are
small (64-128 px a side, 1-2 steps, ``exact_size``), a fraction of a second each on two cores. Each client
thread (seeded) keeps 2 or 4 jobs outstanding (even / odd clients), cancels about one job in ten, drops its
socket without a websocket close every 2-12 s, stays away 0.3-2 s, reconnects and fetches by id every job
it left behind. Every result it receives is fetched once more by id and compared before it is acknowledged.

Checks (each violation is printed; exit status 1 if any):

- **nothing lost**: every finished job (its ``result`` seen, or seen running when its client left) is
  fetched with the seeds, sizes and pixels it was made with; a cancelled job is never fetchable;
- **responsive**: a probe connection every second gets ``welcome`` within ``--max-latency-s``, and every
  ``cancel`` ends its job within that time too;
- **memory**: the server's VmRSS grows by less than ``--rss-growth-mib`` from the end of the warm-up (the
  first minute, or the first third of a shorter run) to the end;
- **fair**: a new connection's job is queued behind at most one job per client (``position`` <= clients + 1),
  and per connected minute no client completes less than ``--fair-ratio`` times the busiest one (checked
  once every client completed ``MIN_FAIR_JOBS``), although odd clients ask for twice as much.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from easel.client.connection import Client, ClientError, Event, new_job_id
from easel.client.protocol import GenerateRequest

from .fixtures import DEMO_WEIGHTS, serve_process, tmpdir

SIZES = (64, 96, 128)
PROMPTS = ("a red circle", "a blue square", "a green triangle on yellow", "two circles")
MAX_JOBS_PER_MINUTE = 600  #: per client: bounds the random submissions (far above what the server makes)
SESSION_S, AWAY_S = (2.0, 12.0), (0.3, 2.0)  #: connected before dropping the socket; away before reconnecting
CANCEL_SHARE, CANCEL_AFTER_S = 0.1, 0.5  #: jobs that get a cancel, sent 0..CANCEL_AFTER_S after submitting
SETTLE_S = 60.0  #: after the run, how long outstanding jobs may take to end
MIN_FAIR_JOBS = 20  #: the per-client completion ratio is checked once every client completed this many
PROBE_S, FAIR_PROBE_S = 1.0, 10.0  #: welcome probe period; new-client job probe period (a fifth of a short run)


@dataclass
class Job:
    request: GenerateRequest
    submitted: float
    cancel_at: float | None = None  # when to send cancel (None: never)
    cancel_sent: float | None = None
    started: bool = False  # a progress event was seen
    digest: str | None = None  # of the first result's pixels: any fetch must match it
    phase: str = "waiting"  # waiting -> verifying (result seen, fetch sent); recovering; cancel-check


def digest(event: Event) -> str:
    h = hashlib.sha1()
    for i in range(len(event.data["images"])):
        h.update(event.images[f"image{i}"].data)
    return h.hexdigest()


def drop(client: Client) -> None:
    """Shut the socket without a websocket close: a crashed editor, a pulled cable."""
    ws, client._ws = client._ws, None
    if ws is not None:
        ws.close_socket()


class Soaker(threading.Thread):
    """One random client; ``counts``, latencies and ``violations`` are read after it ends."""

    def __init__(self, index: int, url: str, start: float, end: float, seed: int):
        super().__init__(name=f"soak-{index}", daemon=True)
        self.index, self.url, self.start_t, self.end = index, url, start, end
        self.rng = random.Random(seed * 1000 + index)
        self.depth = 2 if index % 2 == 0 else 4
        self.budget = max(1, int((end - start) / 60 * MAX_JOBS_PER_MINUTE))
        self.jobs: dict[str, Job] = {}
        self.counts: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.cancel_latencies: list[float] = []
        self.connected_s = 0.0  # during the run (not the settling)
        self.violations: list[str] = []

    def run(self) -> None:
        try:
            while time.monotonic() < self.end:
                self.session(last=False)
                time.sleep(self.rng.uniform(*AWAY_S))
            self.session(last=True)
        except Exception as exc:  # noqa: BLE001 - reported as a violation
            self.violations.append(f"client {self.index} stopped: {exc!r}")

    def session(self, last: bool) -> None:
        client = Client(self.url, image_format="rgba", timeout=30, client_name=f"soak-{self.index}")
        client.connect()
        t0 = time.monotonic()
        if self.counts["sessions"]:
            self.counts["reconnects"] += 1
        self.counts["sessions"] += 1
        for job_id, job in self.jobs.items():  # left behind: what became of it?
            job.phase = "cancel-check" if job.phase == "cancel-check" else "recovering"
            client.send({"type": "fetch", "job": job_id})
        leave = self.end + SETTLE_S if last else min(self.end, t0 + self.rng.uniform(*SESSION_S))
        try:
            while (now := time.monotonic()) < leave and (self.jobs or not last):
                if not last:
                    self.top_up(client, now)
                for job_id, job in self.jobs.items():
                    if job.phase == "waiting" and job.cancel_at is not None and job.cancel_sent is None \
                            and now >= job.cancel_at:
                        client.cancel(job_id)
                        job.cancel_sent = now
                try:
                    event = next(client.events(timeout=0.1))
                except TimeoutError:
                    continue
                except StopIteration:
                    raise ClientError("the server closed the connection") from None
                self.handle(client, event)
        finally:
            self.connected_s += max(0.0, min(time.monotonic(), self.end) - t0)
        if last:
            for job_id, job in self.jobs.items():
                self.violations.append(f"{job_id} ({job.phase}) did not end within {SETTLE_S:g} s after the run")
            client.close()
        else:
            self.counts["drops"] += 1
            self.counts["drops mid-job"] += any(j.started and j.phase == "waiting" for j in self.jobs.values())
            drop(client)

    def top_up(self, client: Client, now: float) -> None:
        rng = self.rng
        while sum(j.phase in ("waiting", "recovering") for j in self.jobs.values()) < self.depth \
                and self.counts["submitted"] < self.budget:
            request = GenerateRequest(job=new_job_id(), prompt=rng.choice(PROMPTS), seed=rng.randrange(2**31),
                                      steps=rng.randint(1, 2), width=rng.choice(SIZES), height=rng.choice(SIZES),
                                      batch=2 if rng.random() < 0.2 else 1, exact_size=True,
                                      preview=rng.random() < 0.5)
            cancel_at = now + rng.uniform(0, CANCEL_AFTER_S) if rng.random() < CANCEL_SHARE else None
            client.submit(request)
            self.jobs[request.job] = Job(request, now, cancel_at)
            self.counts["submitted"] += 1

    def handle(self, client: Client, event: Event) -> None:
        job = self.jobs.get(event.job or "")
        if event.type == "acked":
            if not event.data.get("found"):
                self.violations.append(f"{event.job}: ack found no stored result")
        elif job is None:
            if event.type == "error":
                self.violations.append(f"error for no job of ours: {event.data}")
        elif event.type == "progress":
            job.started = True
        elif event.type == "result":
            self.on_result(client, event, job)
        elif event.type == "cancelled":
            if job.cancel_sent is None:
                self.violations.append(f"{event.job} cancelled without a cancel: {event.data}")
            else:
                self.counts["cancelled"] += 1
                self.cancel_latencies.append(time.monotonic() - job.cancel_sent)
            job.phase = "cancel-check"
            client.send({"type": "fetch", "job": event.job})
        elif event.type == "error":
            self.on_error(event, job)

    def on_result(self, client: Client, event: Event, job: Job) -> None:
        r = job.request
        want = [(r.seed + k, r.width, r.height) for k in range(r.batch)]
        got = [(i["seed"], i["width"], i["height"]) for i in event.data["images"]]
        if got != want:
            self.violations.append(f"{r.job}: images (seed, width, height) {got}, asked for {want}")
        pixels = digest(event)
        if job.phase == "cancel-check":
            self.violations.append(f"{r.job} was cancelled but its result is stored")
        elif job.phase == "waiting":  # delivered: fetch it once more before the ack
            self.counts["done"] += 1
            self.counts["run done"] += time.monotonic() < self.end
            self.counts["late cancels"] += job.cancel_sent is not None
            self.latencies.append(time.monotonic() - job.submitted)
            job.digest, job.phase = pixels, "verifying"
            client.send({"type": "fetch", "job": r.job})
            return
        elif job.digest is not None and pixels != job.digest:
            self.violations.append(f"{r.job}: fetched pixels differ from the delivered ones")
        elif job.digest is None:  # finished while its client was away
            self.counts["fetched after reconnect"] += 1
            self.counts["run done"] += time.monotonic() < self.end
        del self.jobs[r.job]
        client.send({"type": "ack", "job": r.job})

    def on_error(self, event: Event, job: Job) -> None:
        code, what = event.data.get("code"), f"{event.job} ({job.phase}, started={job.started})"
        if code == "bad_request" and event.data.get("field") == "job" and job.cancel_sent is not None:
            return  # a cancel that crossed the result: the job had ended
        gone = code == "not_found"
        if gone and job.phase == "cancel-check":
            pass
        elif gone and job.phase == "recovering" and (job.cancel_sent is not None or not job.started):
            self.counts["dropped while away"] += 1  # queued (or cancelled) when its client left: policy
        else:
            self.violations.append(f"LOST {what}" if gone else f"{what}: {code}: {event.data.get('message')}")
        del self.jobs[event.job]


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def server_pid() -> int:
    """The ``easel serve`` child of this process (serve_process's)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and b"serve" in cmd:
            return int(stat.parent.name)
    raise RuntimeError("the easel serve process was not found among this process's children")


class Probe(threading.Thread):
    """Every PROBE_S: a new connection's hello -> welcome time and the server's RSS; every FAIR_PROBE_S
    (``fair=True``): a new connection's one job, its queue position and time to result."""

    def __init__(self, url: str, pid: int, start: float, period: float, fair: bool = False):
        super().__init__(name="soak-probe", daemon=True)
        self.url, self.pid, self.start_t, self.period, self.fair = url, pid, start, period, fair
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, float | None]] = []  # (t, welcome s, rss MiB)
        self.positions: list[int] = []
        self.waits: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(self.period):
            t0 = time.monotonic()
            try:
                with Client(self.url, image_format="rgba", timeout=60, client_name="soak-probe") as client:
                    welcome_s = time.monotonic() - t0
                    if self.fair:
                        self.new_client_job(client)
                    else:
                        self.samples.append((t0 - self.start_t, welcome_s, rss_mib(self.pid)))
            except (ClientError, TimeoutError) as exc:
                self.failures.append(f"probe at {t0 - self.start_t:.0f} s: {exc}")

    def new_client_job(self, client: Client) -> None:
        job = client.submit(GenerateRequest(job=new_job_id(), prompt="a probe", seed=1, steps=1, width=64,
                                            height=64, exact_size=True, preview=False))
        t0 = time.monotonic()
        for event in client.events(timeout=120):
            if event.job == job and event.type == "queued":
                self.positions.append(event.data["position"])
            elif event.job == job and event.type in ("result", "error", "cancelled"):
                self.waits.append(time.monotonic() - t0)
                client.send({"type": "ack", "job": job})
                return


def pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return (values or [0.0])[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def report(args: argparse.Namespace, clients: list[Soaker], probe: Probe, fair: Probe, seconds: float) -> list[str]:
    """Print the summary table; returns the violations."""
    keys = ("submitted", "done", "cancelled", "late cancels", "fetched after reconnect", "dropped while away",
            "reconnects", "drops mid-job")
    print(f"\nsoak: {len(clients)} clients, {seconds / 60:.1f} min, seed {args.seed}, model {args.model}")
    print("client depth " + " ".join(f"{k:>12.12}" for k in keys) + "  done/min")
    total: Counter[str] = Counter()
    rates = []
    for c in clients:
        total.update(c.counts)
        rate = c.counts["run done"] / max(c.connected_s / 60, 1e-9)
        rates.append(rate)
        print(f"{c.index:>6} {c.depth:>5} " + " ".join(f"{c.counts[k]:>12}" for k in keys) + f"  {rate:8.1f}")
    print(" total       " + " ".join(f"{total[k]:>12}" for k in keys))
    lat = [x for c in clients for x in c.latencies]
    cancel = [x for c in clients for x in c.cancel_latencies]
    welcome = [s[1] for s in probe.samples]
    for name, values in (("job submit -> result", lat), ("cancel -> cancelled", cancel),
                         ("probe hello -> welcome", welcome), ("new client's job -> result", fair.waits)):
        if values:
            print(f"{name:28} p50 {pct(values, 50):6.3f} s  p95 {pct(values, 95):6.3f} s  max {max(values):6.3f} s"
                  f"  ({len(values)})")
    violations = [v for c in clients for v in c.violations] + probe.failures + fair.failures
    if max(welcome + cancel, default=0) > args.max_latency_s:
        violations.append(f"a welcome or cancel took {max(welcome + cancel):.2f} s > {args.max_latency_s:g} s")
    warm_s = min(60.0, seconds / 3)
    rss = [(t, r) for t, _, r in probe.samples if r is not None]
    after = [r for t, r in rss if t >= warm_s]
    if after:
        growth = after[-1] - after[0]
        print(f"server RSS: {rss[0][1]:.0f} MiB at {rss[0][0]:.0f} s, {after[0]:.0f} MiB after the {warm_s:.0f} s "
              f"warm-up, {after[-1]:.0f} MiB at the end ({growth:+.1f} MiB, bound {args.rss_growth_mib:g}), "
              f"peak {max(r for _, r in rss):.0f} MiB")
        if growth >= args.rss_growth_mib:
            violations.append(f"server RSS grew {growth:.1f} MiB after the warm-up (bound {args.rss_growth_mib:g})")
    else:
        violations.append("no RSS samples after the warm-up")
    bound = len(clients) + 1
    print(f"new client's queue position: max {max(fair.positions, default=0)} of {len(fair.positions)} probes "
          f"(bound {bound})")
    if any(p > bound for p in fair.positions):
        violations.append(f"a new client's job was queued at position {max(fair.positions)} > {bound}")
    if min(c.counts["run done"] for c in clients) >= MIN_FAIR_JOBS:
        ratio = min(rates) / max(rates)
        print(f"completed per connected minute: min/max {ratio:.2f} (bound {args.fair_ratio:g})")
        if ratio < args.fair_ratio:
            violations.append(f"per-client completions per minute min/max {ratio:.2f} < {args.fair_ratio:g}")
    else:
        print(f"completed per connected minute: not compared (a client completed fewer than {MIN_FAIR_JOBS})")
    if total["done"] + total["fetched after reconnect"] == 0:
        violations.append("no job completed")
    return violations


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="easel-demo", help="what the server serves (default: the demo model)")
    p.add_argument("--max-latency-s", type=float, default=5.0, help="bound on welcome and cancel times")
    p.add_argument("--rss-growth-mib", type=float, default=64.0, help="bound on RSS growth after the warm-up")
    p.add_argument("--fair-ratio", type=float, default=0.6, help="least per-client completion rate / the most")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1:
        p.error("--minutes must be > 0 and --clients >= 1")
    if args.model == "easel-demo" and not (DEMO_WEIGHTS / "easel-demo.safetensors").is_file():
        p.error(f"--model easel-demo: {DEMO_WEIGHTS} has no weights; run `easel demo-model train` or pass --model")
    cmd = [sys.executable, "-u", "-m", "easel", "serve", "--host", "127.0.0.1", "--port", "0",
           "--model", args.model, "--output-dir", tmpdir("soak")]
    with serve_process(cmd, "easel serve", 30) as url:
        start = time.monotonic()
        end = start + args.minutes * 60
        probe = Probe(url, server_pid(), start, PROBE_S)
        fair = Probe(url, 0, start, min(FAIR_PROBE_S, args.minutes * 60 / 5), fair=True)
        clients = [Soaker(i, url, start, end, args.seed) for i in range(args.clients)]
        for thread in (probe, fair, *clients):
            thread.start()
        for c in clients:
            c.join(end - time.monotonic() + SETTLE_S + 60)
        probe.stop.set()
        fair.stop.set()
        probe.join(70)
        fair.join(130)
        seconds = time.monotonic() - start
        violations = report(args, clients, probe, fair, seconds)
        violations += [f"client {c.index} still running" for c in clients if c.is_alive()]
    for v in violations:
        print(f"VIOLATION: {v}")
    print("soak: " + ("FAILED" if violations else "passed"))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
