"""`sesame-tts bench` on tiny random weights, MLX and PyTorch: the JSON carries every
documented key; csm-torch's also its three parity checks."""

from __future__ import annotations

import argparse
import json

import pytest

from sesame_server.backends.registry import plugin
from sesame_server.config import Settings


@pytest.mark.parametrize("backend", ["csm", "csm-torch"])
def test_bench_tiny_writes_the_documented_json(tmp_path, capsys, backend):
    if backend == "csm-torch":
        pytest.importorskip("torch")
    csm = plugin("csm")  # what `sesame-tts bench` calls
    parser = argparse.ArgumentParser()
    csm.add_bench_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--backend", backend, "--random-weights", "--flavor", "tiny", "--frames", "4",
                              "--rounds", "1", "--json", str(out)])
    results = plugin(backend).bench(args, Settings(cache_dir=tmp_path))
    data = json.loads(out.read_text())
    for key in ("ms_per_frame", "reference_ms_per_frame", "speedup", "first_audio_frames", "prefill_tokens_cold",
                "prefill_tokens_warm", "request_text_tokens", "ttfa_ms", "rtf", "peak_memory_gb", "rss_gb", "dtype",
                "config", "mimi_decode_ms", "ms_per_frame_streaming", "reference_first_frame_ms", "device"):
        assert key in data, key
    assert set(data["ttfa_ms"]) >= {"prefill", "first_frame", "first_decode"}
    assert data["first_audio_frames"] == 1
    assert data["prefill_tokens_warm"] == data["request_text_tokens"] < data["prefill_tokens_cold"]
    assert data["dtype"] == "float32" and data["config"].get("audio_num_codebooks", data["config"].get("num_codebooks")) == 32
    assert data["ms_per_frame"] > 0 and data["reference_ms_per_frame"] > 0
    assert data["mimi_decode_ms"] > 0 and data["ms_per_frame_streaming"] > 0 and data["rss_gb"] > 0
    assert results["speedup"] == data["speedup"]
    turn = data["context_turn"]  # turn 2 of a conversation: continued KV state vs full prefill
    # The full prefill re-reads turn 1 (text, 4 frames, end frame); continuing feeds only
    # its last frame and end frame, not yet in the cache.
    assert turn["prefill_tokens_full"] - turn["prefill_tokens_continued"] == data["request_text_tokens"] + 4 + 1 - 2
    assert "speedup" in capsys.readouterr().out
    if backend == "csm-torch":  # the three parity checks, on the bench's own weights
        parity = data["parity"]
        assert parity["generate"]["identical_frames"] == parity["generate"]["of"] == 20
        assert parity["mlx"]["identical_frames"] == 20 and parity["mlx"]["first_logits_max_abs_diff"] < 1e-3
        assert parity["mimi"]["relative_to_peak"] < 5e-5 and parity["mimi"]["samples"] == 20 * 1920
