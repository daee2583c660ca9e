"""Voice prompts are Mimi-encoded once (memory + disk) and their backbone prefix is reused."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sesame_server.backends.base import BackendError
from sesame_server.backends.csm import CsmBackend, available
from sesame_server.config import Settings
from sesame_server.engine.request import ContextTurn
from tests.csm_tiny import (BACKENDS, backend_for, codes, collect, make_request, speak, tiny_model_dir,
                             tiny_settings, tiny_settings_for)

FRAMES = 4


@pytest.mark.parametrize("name", BACKENDS)
def test_second_request_encodes_nothing_and_prefills_only_its_text(tmp_path, name):
    backend = backend_for(name, tiny_settings_for(name, tmp_path), max_frames_per_sentence=FRAMES)
    _, cold = speak(backend, make_request("A first request."))
    assert backend.mimi_encodes == 1
    voice_tokens = cold.prefill_tokens - cold.text_tokens
    assert voice_tokens > 12  # the voice segment: its transcript, its audio frames, the end frame

    _, warm = speak(backend, make_request("A second, different request."))
    assert backend.mimi_encodes == 1
    assert backend.counters.voice_cache_hits == 1
    assert warm.prefill_tokens == warm.text_tokens

    collect(backend, make_request("Another voice.", voice="conversational_a"))
    assert backend.mimi_encodes == 2
    status = backend.status()
    assert status["mimi_encodes"] == 2 and status["voices_prefilled"] == ["conversational_a", "conversational_b"]

    # The codes live on disk: a new process (backend) and a reload encode nothing.
    assert len(list((tmp_path / "csm" / "voice_codes").glob("*.npz"))) == 2
    fresh = backend_for(name, tiny_settings_for(name, tmp_path), max_frames_per_sentence=FRAMES)
    collect(fresh, make_request("After a restart."))
    assert fresh.mimi_encodes == 0
    fresh.unload()
    assert fresh.status()["loaded"] is False
    collect(fresh, make_request("After an idle unload."))
    assert fresh.mimi_encodes == 0 and fresh.status()["loaded"] is True


@pytest.mark.parametrize("name", BACKENDS)
def test_context_turns_sit_between_voice_and_text(tmp_path, name):
    backend = backend_for(name, tiny_settings_for(name, tmp_path), max_frames_per_sentence=FRAMES)
    collect(backend, make_request("Warm the voice."))
    audio = np.random.default_rng(0).integers(0, 60, (32, 5))
    turns = (ContextTurn("What did you say?", speaker=1), ContextTurn("I said hello.", speaker=0, codes=audio))
    _, generation = speak(backend, make_request("And now this.", context=turns, previous_text="Earlier words."))
    builder = backend.runtime.builder
    context_tokens = (len(builder.text("What did you say?", 1)) + len(builder.segment("I said hello.", 0, audio))
                      + len(builder.text("Earlier words.", 0)))
    assert generation.prefill_tokens == context_tokens + generation.text_tokens
    assert generation.context_turns == 3
    assert generation.segments[0][1].shape == (32, FRAMES)


@pytest.mark.parametrize("name", BACKENDS)
def test_window_overflow_drops_oldest_context_never_the_voice(tmp_path, name):
    backend = backend_for(name, tiny_settings_for(name, tmp_path), max_frames_per_sentence=FRAMES)
    collect(backend, make_request("Warm the voice."))
    long_turns = tuple(
        ContextTurn(f"Turn {i}.", speaker=i % 2, codes=np.full((32, 300), 3), turn_id=f"t{i}") for i in range(8)
    )  # 8 x ~300 tokens: more than the 2048-token window
    blocks, generation = speak(backend, make_request("Still speaking.", context=long_turns))
    assert len(blocks) == FRAMES
    # A re-lay keeps the newest turns, at most half the window of them (so it does not
    # recur at every following sentence), and always the voice prompt.
    assert generation.context_turns == 3
    assert 3 * 300 < generation.prefill_tokens < 1024 + 100
    assert backend.counters.voice_cache_hits == 1  # the voice prefix was reused, not dropped


@pytest.mark.parametrize("name", BACKENDS)
def test_a_cloned_voice_is_encoded_once_and_forgotten_when_deleted(tmp_path, name):
    import soundfile

    from sesame_server.backends.csm.random_weights import random_voice_prompt
    from sesame_server.engine.request import ReferenceVoice

    wav = tmp_path / "mine.wav"
    soundfile.write(str(wav), random_voice_prompt(1.0, seed=9), 24_000, subtype="PCM_16")
    reference = ReferenceVoice(voice_id="mine", audio_path=str(wav), transcript="Hello there.")
    backend = backend_for(name, tiny_settings_for(name, tmp_path), max_frames_per_sentence=FRAMES)
    _, cold = speak(backend, make_request("In my voice.", voice="mine", reference=reference))
    _, warm = speak(backend, make_request("Again.", voice="mine", reference=reference))
    assert backend.mimi_encodes == 1 and warm.prefill_tokens == warm.text_tokens < cold.prefill_tokens
    assert backend.status()["voices_prefilled"] == ["mine"]

    backend.forget_voice("mine")  # deleted: its codes and its KV prefix go
    assert backend.status()["voices_prefilled"] == []
    wav.unlink()
    with pytest.raises(BackendError, match="mine"):  # nothing in memory still speaks it
        speak(backend, make_request("Gone.", voice="mine", reference=reference))


def test_voices_have_names_and_labels(tmp_path):
    voices = {v.id: v for v in CsmBackend(tiny_settings(tmp_path)).voices()}
    assert voices["conversational_b"].name == "Max (Conversational Male)"
    assert voices["conversational_a"].labels["gender"] == "female"


def test_csm_available_is_local_only(tmp_path):
    local = (True, f"weights found locally: MODEL_PATH {tiny_model_dir()}")
    assert available(tiny_settings(tmp_path)) == available(tiny_settings(tmp_path), auto=True) == local
    ok, reason = available(Settings(model_path=tmp_path / "nothing-here"))
    assert not ok and "MODEL_PATH" in reason
    ok, reason = available(Settings(random_weights="tiny"), auto=True)
    assert ok and "random" in reason


def test_random_weights_backend_says_it_is_noise(tmp_path, caplog):
    backend = CsmBackend(Settings(random_weights="tiny", cache_dir=tmp_path), max_frames_per_sentence=3)
    with caplog.at_level(logging.WARNING):
        backend.load()
    assert "RANDOM WEIGHTS" in caplog.text
    blocks = collect(backend, make_request("Noise, loudly.", voice="conversational_a"))
    assert len(blocks) == 3
    status = backend.status()
    assert status["random_weights"] == "tiny" and "NOISE" in status["warning"]
    assert status["model_id"] == "random-weights:tiny"
    assert isinstance(status["memory_bytes"], int) and status["memory_bytes"] > 1_000_000  # bytes, not GB
    assert status["peak_memory_bytes"] >= status["memory_bytes"]
    assert "rss_gb" not in status and "memory_gb" not in status  # process memory is the ops layer's
    assert not (tmp_path / "csm").exists()  # random prompts are not cached on disk


@pytest.mark.parametrize("bits", ["8", "4"])
def test_quantized_backend_generates(tmp_path, bits):
    import mlx.nn as nn

    backend = CsmBackend(tiny_settings(tmp_path, quantize=bits), max_frames_per_sentence=3)
    blocks = collect(backend, make_request("Quantized speech."))
    assert len(blocks) == 3 and all(np.isfinite(b).all() for b in blocks)
    model = backend.runtime.model
    assert isinstance(model.backbone.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    assert isinstance(model.decoder.layers[0].mlp.down_proj, nn.QuantizedLinear)


def test_long_text_drops_the_oldest_context_when_the_window_fills(tmp_path):
    """End to end: sentence two does not fit next to the context, which is re-laid without it."""
    frames, window = 8, 136
    backend = CsmBackend(tiny_settings(tmp_path), max_frames_per_sentence=frames, max_len=window)
    collect(backend, make_request("Warm the voice."))
    voice_tokens = backend.runtime.voice_prefix(backend.runtime.voice_prompt("conversational_b"))[0].length
    builder = backend.runtime.builder
    first, second = "One more.", "Two more."
    text1, text2 = len(builder.text(first, 0)), len(builder.text(second, 0))
    turn = ContextTurn("Old.", speaker=1, codes=np.full((32, 60), 5))
    turn_tokens = len(builder.segment(turn.text, turn.speaker, turn.codes))
    assert voice_tokens + turn_tokens + text1 + frames < window < voice_tokens + turn_tokens + text1 + frames + 2 + text2 + frames

    prefilled = backend.counters.prefill_tokens_total
    blocks, generation = speak(backend, make_request(f"{first} {second}", context=(turn,)))
    assert len(blocks) == 2 * frames and codes(generation).shape == (32, 2 * frames)
    # Sentence two did not fit: the old turn was dropped, sentence one (text, audio, end
    # frame) re-laid after the cached voice prefix, which was never re-prefilled.
    sentence_one = text1 + frames + 1
    assert backend.counters.prefill_tokens_total - prefilled == (turn_tokens + text1) + (sentence_one + text2)
    assert backend.counters.window_relays == 1
    assert generation.prefill_tokens == turn_tokens + text1  # what the first audio waited for
    assert generation.context_turns == 0  # only the request's own sentence is left


def test_download_all_uses_local_directories_offline(tmp_path, monkeypatch):
    from sesame_server.backends.csm import hub, loading

    def no_network(*args, **kwargs):
        raise AssertionError("must not touch the hub when everything is local")

    monkeypatch.setattr(hub, "file", no_network)
    monkeypatch.setattr(hub, "snapshot", no_network)
    paths = loading.download_all(tiny_settings(tmp_path))
    assert paths["model"] == tiny_model_dir()
    assert paths["voice:conversational_a"].name == "conversational_a.wav"


def test_download_command_checks_a_local_directory_offline(tmp_path, monkeypatch, capsys):
    from sesame_server.cli import main

    monkeypatch.setenv("MODEL_PATH", str(tiny_model_dir()))
    monkeypatch.setenv("CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--env-file", str(tmp_path / "none.env"), "download"]) == 0
    out = capsys.readouterr().out
    assert str(tiny_model_dir()) in out and "conversational_b.wav" in out

    monkeypatch.setenv("MODEL_PATH", str(tmp_path))  # no weights there
    assert main(["--env-file", str(tmp_path / "none.env"), "download"]) == 1
    assert "MODEL_PATH" in capsys.readouterr().err


def test_long_text_relays_the_window_rarely(tmp_path):
    """End to end: once the window is full, a re-lay (a full prefill of the kept context)
    buys room for several sentences, and the long text is spoken in full."""
    frames, sentences = 4, 12  # ~13 positions a sentence: the 128-position window fills at the 8th
    backend = CsmBackend(tiny_settings(tmp_path), max_frames_per_sentence=frames, max_len=128)
    request = make_request(" ".join(["Hello there."] * sentences))
    blocks, generation = speak(backend, request)
    assert generation.frames == sentences * frames and len(blocks) == sentences * frames
    assert [text for text, _ in generation.segments] == list(request.sentences)
    assert 1 <= backend.counters.window_relays <= sentences // 4  # it filled, but no re-lay per sentence
    assert backend.counters.prefill_tokens_total < 3 * generation.text_tokens


def _bad_codes_file(path, kind: str) -> None:
    """What another node, a damaged disk or a hostile writer may leave as a voice's cached codes."""
    import os
    import zipfile

    text = np.array("Hello there.")
    if kind == "fifo":  # a read would block the inference thread for ever
        os.mkfifo(path)
    elif kind == "not an npz":
        path.write_bytes(b"PK\x03\x04 not a zip at all" * 10)
    elif kind == "huge":  # 64 MiB of codes in a few kilobytes: read before any check, else
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
            with out.open("codes.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.zeros((32, 1 << 18), np.int64))
            with out.open("text.npy", "w") as member:
                np.lib.format.write_array(member, text)
    else:
        codes = {"codes past every table": np.full((32, 20), 10**9, np.int32),
                 "codes past the model's bins": np.full((32, 20), 64, np.int32),  # the tiny Mimi has 64
                 "negative codes": np.full((32, 20), -1, np.int32),
                 "one codebook": np.ones((1, 3), np.int32),
                 "float codes": np.zeros((32, 20), np.float32)}[kind]
        np.savez(path, codes=codes, text=text)


@pytest.mark.parametrize("kind", ["codes past every table", "codes past the model's bins", "negative codes",
                                  "one codebook", "float codes", "not an npz", "huge", "fifo"])
def test_a_cloned_voices_cached_codes_are_checked_before_use(tmp_path, kind):
    """VOICES_DIR may be shared: the codes file next to a cloned voice is another node's
    writing, read only if the model can use it; anything else is a miss, encoded again."""
    import threading

    import soundfile

    from sesame_server.backends.csm.random_weights import random_voice_prompt
    from sesame_server.engine.request import ReferenceVoice

    (tmp_path / "mine").mkdir()
    wav = tmp_path / "mine" / "reference.wav"
    soundfile.write(str(wav), random_voice_prompt(1.0, seed=9), 24_000, subtype="PCM_16")
    reference = ReferenceVoice(voice_id="mine", audio_path=str(wav), transcript="Hello there.")
    request = make_request("In my voice.", voice="mine", reference=reference)
    collect(CsmBackend(tiny_settings(tmp_path), max_frames_per_sentence=FRAMES), request)
    [cached] = (tmp_path / "mine").glob("codes-*.npz")
    good = np.load(cached)["codes"]
    cached.unlink()
    _bad_codes_file(cached, kind)

    fresh = CsmBackend(tiny_settings(tmp_path), max_frames_per_sentence=FRAMES)
    spoken: list = []
    worker = threading.Thread(target=lambda: spoken.append(speak(fresh, request)), daemon=True)
    worker.start()
    worker.join(60)
    assert spoken, "the request never finished"
    blocks, _ = spoken[0]
    assert len(blocks) == FRAMES and fresh.mimi_encodes == 1  # a miss: encoded again
    np.testing.assert_array_equal(np.load(cached)["codes"], good)  # and the file made whole


def test_context_codes_the_model_cannot_read_are_left_out(tmp_path):
    """Turns come from memory, and memory from a shared store: codes past the model's tables
    or of another shape never reach the backbone (an index past a table is a crash)."""
    backend = CsmBackend(tiny_settings(tmp_path), max_frames_per_sentence=FRAMES)
    turns = (ContextTurn("Way out.", speaker=0, codes=np.full((32, 3), 10**9), turn_id="a"),
             ContextTurn("Past the bins.", speaker=0, codes=np.full((32, 3), 64), turn_id="b"),
             ContextTurn("Too narrow.", speaker=0, codes=np.ones((1, 3), np.int32), turn_id="c"),
             ContextTurn("Fine.", speaker=0, codes=np.full((32, 3), 5), turn_id="d"))
    blocks, generation = speak(backend, make_request("And now this.", context=turns))
    assert len(blocks) == FRAMES and generation.context_turns == 1  # only the turn it can read


@pytest.mark.parametrize("name", BACKENDS)
def test_a_cloned_voice_in_memory_reads_nothing_from_its_folder(tmp_path, name):
    """Once its prompt is in memory, a cloned voice's requests never touch its folder: a share
    that hangs afterwards (a FIFO standing in for it) cannot block the inference thread."""
    import os
    import threading

    import soundfile

    from sesame_server.backends.csm.random_weights import random_voice_prompt
    from sesame_server.engine.request import ReferenceVoice

    wav = tmp_path / "mine.wav"
    soundfile.write(str(wav), random_voice_prompt(1.0, seed=9), 24_000, subtype="PCM_16")
    reference = ReferenceVoice(voice_id="mine", audio_path=str(wav), transcript="Hello there.")
    first_done, share_hung, spoken, encodes = threading.Event(), threading.Event(), [], []

    def inference_thread() -> None:  # MLX streams are per thread: one thread does it all, as the engine's
        backend = backend_for(name, tiny_settings_for(name, tmp_path), max_frames_per_sentence=FRAMES)
        speak(backend, make_request("In my voice.", voice="mine", reference=reference))
        first_done.set()
        share_hung.wait(30)
        spoken.append(speak(backend, make_request("Again.", voice="mine", reference=reference))[0])
        encodes.append(backend.mimi_encodes)

    worker = threading.Thread(target=inference_thread, daemon=True)
    worker.start()
    assert first_done.wait(120)
    wav.unlink()
    os.mkfifo(wav)  # reading it blocks until a writer comes: a hung share
    share_hung.set()
    worker.join(20)
    if worker.is_alive():  # let the blocked read go before failing
        with open(os.open(wav, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
    assert spoken and len(spoken[0]) > 0
    assert encodes == [1]
