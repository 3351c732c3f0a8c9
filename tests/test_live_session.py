"""Live painting's editor-independent side (server/easel/client/editing/): when a frame goes out, which
results are shown, the fixed seed, change detection (the LiveConnection against a real server:
tests/test_live_connection.py)."""

from __future__ import annotations

import pytest

from easel.client import editing
from easel.client.editing import LiveConfig, LiveSession, Params

TURBO = {"id": "turbo", "few_step": True, "default_steps": 2}
PLAIN = {"id": "plain", "few_step": False, "default_steps": 20}


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def tick(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock():
    return Clock()


def session(clock, seed=7, **config) -> LiveSession:
    return LiveSession(seed, LiveConfig(**config), clock=clock)


def frame(s: LiveSession, clock, n: int, seconds: float = 0.0, prompt: str = "p") -> bool:
    """One whole frame: state ``c<n>`` seen, sent as job ``j<n>``, its result back ``seconds`` later."""
    s.observe(f"c{n}", prompt)
    s.sent(f"j{n}")
    clock.tick(seconds)
    return s.finished(f"j{n}", True)


# ------------------------------------------------------------------------------ parameters


def test_live_steps_follow_the_model():
    assert editing.live_steps(TURBO) == 2  # a few-step model's own default
    assert editing.live_steps(PLAIN) == editing.LIVE_STEPS
    assert editing.live_steps(None) == editing.LIVE_STEPS
    assert editing.live_steps(PLAIN, 3) == 3  # the painter's small step count is kept
    assert editing.live_steps(PLAIN, 30) == editing.LIVE_STEPS  # a big one would make live too slow
    assert editing.live_steps(TURBO, 30) == 2
    assert 4 <= editing.LIVE_STEPS <= editing.LIVE_MAX_STEPS <= 8


def test_find_model_and_live_params():
    welcome = {"models": [PLAIN, TURBO], "default_model": "turbo"}
    assert editing.find_model(welcome, None) is TURBO
    assert editing.find_model(welcome, "plain") is PLAIN
    assert editing.find_model(welcome, "nope") is None and editing.find_model(None, None) is None
    painter = Params(prompt="a lake", negative_prompt="fog", strength=0.55, steps=None, guidance=3.0, seed=-1,
                     batch=4, model="turbo")
    live = editing.live_params(painter, TURBO, seed=1234)
    assert (live.prompt, live.negative_prompt, live.strength, live.guidance, live.model) == \
        ("a lake", "fog", 0.55, 3.0, "turbo")
    assert (live.steps, live.seed, live.batch) == (2, 1234, 1)


def test_fingerprint_sees_every_byte_and_part_boundaries():
    a = bytes(256 * 256 * 4)
    b = bytearray(a)
    b[123_456] = 1
    assert editing.fingerprint(a) == editing.fingerprint(bytes(a))
    assert editing.fingerprint(a) != editing.fingerprint(bytes(b))
    assert editing.fingerprint(b"ab", b"c") != editing.fingerprint(b"a", b"bc")
    assert editing.fingerprint(a, None) != editing.fingerprint(a, b"")
    assert len(editing.fingerprint("x")) == 32


def test_params_key_changes_with_what_matters():
    p = Params(prompt="a", strength=0.5)
    assert editing.params_key(p) == editing.params_key(Params(prompt="a", strength=0.5))
    assert editing.params_key(p) != editing.params_key(Params(prompt="b", strength=0.5))
    assert editing.params_key(p) != editing.params_key(Params(prompt="a", strength=0.6))
    assert editing.params_key(p, (0, 0, 8, 8)) != editing.params_key(p, (1, 0, 8, 8))


def test_plan_live_replaces_and_skips_previews():
    state = editing.EditorState(8, 6, bytes(8 * 6 * 4), (0, 0, 8, 6))
    planned = editing.plan_live(state, Params(prompt="x", strength=0.5, seed=3, steps=4))
    assert planned.mode == editing.IMG2IMG
    assert planned.request.replace and not planned.request.preview
    message = planned.request.to_message()
    assert message["replace"] is True and message["preview"] is False and message["seed"] == 3
    mask = bytes([0, 255] * 12)
    sel = editing.EditorState(100, 100, bytes(6 * 4 * 4), (40, 50, 6, 4), mask)
    planned = editing.plan_live(sel, Params(prompt="x", strength=0.5))
    assert planned.mode == editing.INPAINT and (planned.request.x, planned.request.y) == (40, 50)
    assert (planned.image.width, planned.mask.height) == (6, 4)  # only the selection's region travels


# ------------------------------------------------------------------------------ the session


def test_seed_is_fixed_for_the_session():
    assert LiveSession(42).seed == 42
    drawn = LiveSession(-1)
    assert 0 <= drawn.seed < 2**32


def test_a_typed_seed_wins_random_keeps_the_drawn_one():
    s = LiveSession(-1)
    drawn = s.seed
    assert s.follow_seed(-1) == drawn
    assert s.follow_seed(77) == 77 and s.seed == 77
    assert s.follow_seed(-1) == 77


def test_first_state_goes_out_at_once_then_nothing_until_a_change(clock):
    s = session(clock)
    assert not s.due() and s.up_to_date  # nothing seen yet
    s.observe("c1", "p")
    assert s.due()
    s.sent("j1")
    assert not s.due() and s.in_flight == "j1" and not s.up_to_date
    clock.tick(0.2)
    s.observe("c1", "p")
    assert not s.due()
    assert s.finished("j1", delivered=True)
    assert s.up_to_date and s.in_flight is None and s.shown_count == 1
    assert s.latencies == [pytest.approx(0.2)] and s.frame_s == pytest.approx(0.2)
    clock.tick(0.15)
    s.observe("c1", "p")
    assert not s.due()
    s.observe("c2", "p")
    assert s.due() and s.pending


def test_changing_back_to_the_sent_state_is_no_change(clock):
    s = session(clock)
    frame(s, clock, 1)
    s.observe("c2", "p")
    assert s.due()
    s.observe("c1", "p")  # undo: back to what is on show
    assert not s.due() and s.up_to_date


def test_a_young_frame_is_replaced_an_old_one_is_awaited(clock):
    s = session(clock, restart_fraction=0.5)
    s.observe("c1", "p")
    s.sent("j1")
    clock.tick(0.1)
    s.observe("c2", "p")
    assert not s.due(), "no frame time known yet (the first frame may load the model): wait"
    clock.tick(0.1)
    assert s.finished("j1", True)  # frame_s = 0.2
    assert s.due()
    s.sent("j2")
    clock.tick(0.05)  # j2 is young (0.05 < 0.5 * 0.2): replacing it costs less than waiting
    s.observe("c3", "p")
    assert s.due()
    s.sent("j3")
    clock.tick(0.01)  # j3 is young too, but it replaced j2: it is never replaced itself (no starving)
    s.observe("c4", "p")
    assert not s.due()
    clock.tick(0.14)  # …and now it is past half a frame: the newest state waits for it
    assert not s.due()
    assert not s.finished("j2", False)  # the server's "cancelled: replaced" for j2 changes nothing
    assert s.in_flight == "j3" and not s.due()
    clock.tick(0.04)
    assert s.finished("j3", True)
    assert s.due()  # …and goes out the moment j3 ends
    assert s.dropped_count == 1 and s.shown_count == 2


def test_a_continuous_stroke_still_gets_frames(clock):
    """Changes every 40 ms, frames of 200 ms: replacing every frame would show nothing."""
    s = session(clock)
    frame(s, clock, 0, 0.2)
    running, shown, n = None, 0, 0
    started = 0.0
    for i in range(1, 51):  # 2 s of painting
        clock.tick(0.04)
        s.observe(f"c{i}", "p")
        if running and clock.t - started >= 0.2 - 1e-9:
            shown += s.finished(running, True)
            running = None
        if s.due():
            n += 1
            replaced, running, started = running, f"j{n}", clock.t
            s.sent(running)
            if replaced:  # the server's "cancelled: replaced" comes after the newer request
                s.finished(replaced, False)
    assert shown >= 7, f"only {shown} frames in 2 s of painting"
    assert s.dropped_count <= shown + 1  # at most one restart per frame


def test_an_older_result_is_never_shown_after_a_newer_one(clock):
    s = session(clock)
    frame(s, clock, 1, 0.3)
    s.observe("c2", "p")
    s.sent("j2")
    s.observe("c3", "p")
    s.sent("j3")  # replaces j2 (young)
    clock.tick(0.1)
    assert s.finished("j3", True)
    assert not s.finished("j2", True), "j2 finished before the replace reached it, but j3 is already shown"
    assert not s.finished("j2", True) and not s.finished("unknown", True)


def test_an_older_result_arriving_first_is_shown(clock):
    s = session(clock)
    s.observe("c1", "p")
    s.sent("j1")
    s.observe("c2", "p")
    s.sent("j2")  # j1 had already finished on the server
    assert s.finished("j1", True)  # newer than what is on show: better than nothing
    assert s.in_flight == "j2" and not s.up_to_date
    assert s.finished("j2", True)


def test_prompt_edits_wait_for_a_typing_pause(clock):
    s = session(clock, typing_quiet_s=0.4)
    frame(s, clock, 1, prompt="a")
    for text in ("a ", "a r", "a re", "a red"):
        clock.tick(0.15)
        s.observe("c1", text)
        assert not s.due()
    clock.tick(0.3)
    s.observe("c1", "a red")
    assert not s.due()
    clock.tick(0.15)
    assert s.due()


def test_a_stalled_frame_is_replaced(clock):
    s = session(clock, stall_s=5.0)
    s.observe("c1", "p")
    s.sent("j1")
    s.observe("c2", "p")
    clock.tick(4.9)
    assert not s.due()
    clock.tick(0.2)
    assert s.due()


def test_a_lost_connection_sends_the_current_state_again(clock):
    s = session(clock)
    s.observe("c1", "p")
    s.sent("j1")
    s.lost()
    assert s.in_flight is None and s.due()
    assert not s.finished("j1", True)


def test_rate_and_status_line(clock):
    s = session(clock, seed=5)
    assert s.status_text().startswith("Live: up to date · 0 frames · seed 5")
    for i in range(5):
        frame(s, clock, i, 0.25)
    assert s.fps() == pytest.approx(4.0)
    assert s.status_text() == "Live: up to date · 5 frames · seed 5 · 4.0/s · 250 ms"
    clock.tick(10)
    assert s.fps() == 0.0
