"""`sesame-tts bench --http`: the end-to-end figures come out of a real server (numbers are
for README, never asserted as thresholds here)."""

from __future__ import annotations

from sesame_server.bench_http import LENGTHS, measure


def test_http_bench_measures_a_running_server(piper_server):
    before = set(piper_server.jobs)
    result = measure(piper_server.url, rounds=1)
    assert result["backend"] == "piper" and result["voice"] == "joe"
    assert result["ttfa_ms"] > 0 and result["requests_per_minute_sequential"] > 0
    assert set(result["generation"]) == set(LENGTHS)
    audio = [result["generation"][name]["audio_seconds"] for name in ("short", "medium", "long")]
    assert audio == sorted(audio) and audio[0] > 0.5  # longer text, longer audio: the files decoded
    assert result["rss_idle_mb"] > 0 and result["rss_peak_mb"] >= result["rss_idle_mb"]
    sessions = {piper_server.jobs[r].request.conversation for r in set(piper_server.jobs) - before}
    assert None in sessions or len(sessions) > 1  # no request was conditioned on another
