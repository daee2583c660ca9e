"""The engine's thread logic, isolated with a fake backend."""

from __future__ import annotations

import pytest

from sesame_server.engine.engine import BUFFERED_HANDICAP_SECONDS, Engine, ModelUnavailable, QueueFull
from sesame_server.engine.request import SpeechRequest
from tests.fakes import FakeBackend, FakeClock, wait_until


def speech(rid: str, stream: bool = False) -> SpeechRequest:
    return SpeechRequest(text="Hello.", voice="fake_voice", request_id=rid, stream=stream)


@pytest.fixture
def gated():
    backend = FakeBackend(frames=3, gated=True)
    engine = Engine(backend, max_queue_depth=4, warmup=False).start()
    assert engine.wait_ready(5)
    yield backend, engine
    engine.stop()


def drain(job) -> int:
    return sum(1 for _ in job.blocks())


def test_streaming_jobs_are_served_before_buffered_then_fifo(gated):
    backend, engine = gated
    holder = engine.submit(speech("holder"))
    wait_until(backend.started.is_set)
    jobs = [engine.submit(speech("b1")), engine.submit(speech("s1", stream=True)),
            engine.submit(speech("b2")), engine.submit(speech("s2", stream=True))]
    backend.gate.release(3 * 5)
    for job in [holder, *jobs]:
        assert drain(job) == 3
    assert backend.served == ["holder", "s1", "s2", "b1", "b2"]


def test_buffered_jobs_age_so_steady_streaming_cannot_starve_them():
    clock = FakeClock()
    backend = FakeBackend(frames=1, gated=True)
    engine = Engine(backend, max_queue_depth=10, warmup=False, clock=clock).start()
    try:
        assert engine.wait_ready(5)
        holder = engine.submit(speech("holder", stream=True))
        wait_until(backend.started.is_set)
        buffered = engine.submit(speech("buffered"))
        fresh = engine.submit(speech("s-now", stream=True))  # arrived with it: goes first
        clock.advance(BUFFERED_HANDICAP_SECONDS + 0.1)
        later = [engine.submit(speech(f"s-later-{n}", stream=True)) for n in range(3)]  # the buffered job aged
        backend.gate.release(10)
        for job in (holder, buffered, fresh, *later):
            assert drain(job) == 1
        assert backend.served == ["holder", "s-now", "buffered", "s-later-0", "s-later-1", "s-later-2"]
    finally:
        engine.stop()


def test_full_queue_raises_with_retry_after(gated):
    backend, engine = gated
    engine.submit(speech("running"))
    wait_until(backend.started.is_set)
    for n in range(4):
        engine.submit(speech(f"w{n}"))
    with pytest.raises(QueueFull) as info:
        engine.submit(speech("one too many"))
    assert info.value.retry_after >= 1
    assert engine.queue_depth == 4


def test_cancelled_waiting_job_leaves_the_queue_and_never_runs(gated):
    backend, engine = gated
    first = engine.submit(speech("first"))
    wait_until(backend.started.is_set)
    waiting = engine.submit(speech("gone"))
    assert engine.queue_depth == 1
    waiting.cancel.set()  # what a closed response generator does
    assert engine.queue_depth == 0
    backend.gate.release(3)
    assert drain(first) == 3
    assert waiting.done.wait(5)
    assert "gone" not in backend.served


def test_cancel_stops_generation_within_one_frame(gated):
    backend, engine = gated
    job = engine.submit(speech("talk", stream=True))
    blocks = job.blocks()
    backend.gate.release()
    next(blocks)
    blocks.close()  # client went away after the first frame
    backend.gate.release(10)
    assert job.done.wait(5)
    assert job.interrupted
    assert job.frames == 1
    assert backend.frames_after_cancel["talk"] == 0
    assert engine.status.interruptions == 1


def test_backend_errors_reach_the_request_thread():
    backend = FakeBackend(frames=5, fail_at=2)
    engine = Engine(backend, warmup=False).start()
    try:
        job = engine.submit(speech("bad"))
        with pytest.raises(ValueError, match="boom"):
            drain(job)
        # and the engine still serves the next request
        assert drain(engine.submit(speech("good"))) == 5
    finally:
        engine.stop()


def test_load_failure_is_reported_and_retried_per_job():
    backend = FakeBackend(fail_load=True)
    engine = Engine(backend, warmup=False, advise=lambda exc: f"advice for {exc}").start()
    try:
        engine.wait_ready(5)
        assert engine.state == "error"
        assert engine.status.load_error == "advice for weights missing"
        with pytest.raises(ModelUnavailable, match="advice for weights missing"):
            drain(engine.submit(speech("x")))
        assert backend.loads == 2
    finally:
        engine.stop()


def test_idle_unload_then_transparent_reload():
    clock = FakeClock()
    backend = FakeBackend(frames=2)
    engine = Engine(backend, warmup=False, idle_unload_minutes=10, clock=clock).start()
    try:
        assert drain(engine.submit(speech("a"))) == 2
        clock.advance(9 * 60)
        engine.poke()
        wait_until(lambda: engine.queue_depth == 0)
        assert engine.state == "ready" and backend.unloads == 0
        clock.advance(61)
        engine.poke()
        wait_until(lambda: engine.state == "unloaded", timeout=5)
        assert backend.unloads == 1 and not backend.loaded
        assert engine.status.backend["loaded"] is False  # the snapshot followed
        assert drain(engine.submit(speech("b"))) == 2
        assert backend.loads == 2 and engine.state == "ready"
    finally:
        engine.stop()


def test_warmup_runs_one_generation_before_ready():
    backend = FakeBackend(frames=2)
    engine = Engine(backend, warmup=True).start()
    try:
        assert engine.wait_ready(5)
        assert backend.served == ["warmup"] and backend.warmups == 1
        assert engine.status.requests_served == 0
    finally:
        engine.stop()


def test_a_client_that_left_the_queue_holds_no_slot():
    """MAX_QUEUE_DEPTH=1: a queued request whose client hung up must not make the next one a 429."""
    backend = FakeBackend(frames=1, gated=True)
    engine = Engine(backend, max_queue_depth=1, warmup=False).start()
    try:
        assert engine.wait_ready(5)
        running = engine.submit(speech("running"))
        wait_until(backend.started.is_set)
        gone = engine.submit(speech("gone"))
        assert list(gone.blocks(client_gone=lambda: True)) == []  # the client hung up while queued
        after = engine.submit(speech("after"))  # raised QueueFull before the fix
        backend.gate.release(2)
        assert drain(running) == 1 and drain(after) == 1
        assert "gone" not in backend.served
    finally:
        engine.stop()


def test_status_is_published_by_the_inference_thread_only():
    backend = FakeBackend(frames=3)
    engine = Engine(backend, warmup=False).start()
    try:
        assert engine.wait_ready(5)
        before = engine.status
        assert before.state == "ready" and before.backend["model_id"] == "fake"
        drain(engine.submit(speech("one")))
        wait_until(lambda: engine.status.requests_served == 1)
        assert engine.status is not before and before.requests_served == 0  # snapshots never change
        with pytest.raises(TypeError):
            engine.status.backend["loaded"] = False  # read-only
        assert backend.status_threads == {"inference"}
    finally:
        engine.stop()


def test_forget_voice_runs_on_the_inference_thread_before_the_next_job():
    backend = FakeBackend(frames=1)
    engine = Engine(backend, warmup=False).start()
    try:
        assert engine.wait_ready(5)
        engine.forget_voice("deleted")
        drain(engine.submit(speech("next")))
        assert backend.forgotten == ["deleted"]
    finally:
        engine.stop()


def test_the_generation_result_and_first_block_figures_reach_the_job():
    backend = FakeBackend(frames=3)
    engine = Engine(backend, warmup=False).start()
    try:
        job = engine.submit(speech("figures"))
        assert drain(job) == 3
        assert job.done.wait(5)
        assert job.prefill_tokens == 7 and job.context_turns == 0
        assert job.generation.frames == 3 and job.error is None and not job.interrupted
    finally:
        engine.stop()


# -- back-pressure: a reader that does not read (issue #22) -------------------------------------
def _frames_of_unread_audio(backend: FakeBackend) -> int:
    from sesame_server.engine.job import MAX_UNREAD_SECONDS

    return int(MAX_UNREAD_SECONDS / backend.info.frame_seconds)


def test_a_job_nobody_reads_pauses_generation_then_is_cut_and_the_next_job_runs():
    """The inference thread holds at most MAX_UNREAD_SECONDS of a job's audio; past
    slow_reader_seconds without a read the job ends with SlowReader and the queue moves on."""
    from sesame_server.engine.job import SlowReader

    backend = FakeBackend(frames=2000)
    budget = _frames_of_unread_audio(backend)
    assert backend.frames > 3 * budget
    engine = Engine(backend, warmup=False, slow_reader_seconds=0.5).start()
    try:
        stuck = engine.submit(speech("stuck", stream=True))  # its reader never reads
        wait_until(lambda: stuck.results.qsize() >= budget)
        backend.frames = 3  # for the next job (the stuck one's loop is under way)
        nxt = engine.submit(speech("next", stream=True))
        assert stuck.done.wait(10) and stuck.frames <= budget + 1
        assert isinstance(stuck.error, SlowReader) and stuck.results.qsize() <= budget + 2
        with pytest.raises(SlowReader):
            drain(stuck)  # the reader that comes back learns the audio was cut
        assert drain(nxt) == 3
    finally:
        engine.stop()


def test_a_reader_that_keeps_up_gets_every_block_past_the_budget():
    backend = FakeBackend(frames=1000)
    assert backend.frames > 2 * _frames_of_unread_audio(backend)
    engine = Engine(backend, warmup=False, slow_reader_seconds=0.5).start()
    try:
        job = engine.submit(speech("steady", stream=True))
        wait_until(lambda: job.results.qsize() >= _frames_of_unread_audio(backend))  # generation waits...
        assert drain(job) == 1000  # ...and goes on as the reader reads
        assert job.error is None and not job.interrupted
    finally:
        engine.stop()
