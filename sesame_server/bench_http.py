"""`sesame-tts bench --http [URL]`: the server measured end to end, as a client sees it.

Against a running server (URL; loopback or not, any backend) or, without one, the real
server started here with BACKEND. Over the OpenAI route, what the product brief's R9 asks:
  - time to first audio, streamed (pcm), median of N;
  - full generation time against text length (buffered mp3, three lengths), and the
    real-time factor (seconds spent per second of audio);
  - resident memory idle (before) and peak (after), from /health;
  - requests per minute, one after another (a short sentence).
Conversation memory would condition each request on the ones before: every request gets
its own X-Session-Id so none does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

import requests

from sesame_server.bench_server import local_server
from sesame_server.config import Settings

SHORT = "Sure, I can help with that."
LENGTHS = {
    "short": SHORT,
    "medium": "The weather today is clear and bright, with a light breeze from the west and a high of "
              "twenty-two degrees. Tomorrow looks much the same.",
    "long": "Thanks for calling. Your order shipped this morning and should arrive on Thursday. The tracking "
            "number is in the email we sent you, and you can change the delivery address until the parcel "
            "leaves the depot tomorrow. Is there anything else I can help you with today?",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", nargs="?", const="", metavar="URL",
                        help="end-to-end figures over HTTP: of the server at URL, or of one started here "
                             "with BACKEND when no URL is given")
    parser.add_argument("--http-rounds", type=int, default=5, help="--http: rounds per figure (default 5)")


def run(args: argparse.Namespace, settings: Settings) -> dict:
    context = nullcontext(None) if args.http else local_server(settings)
    with context as local:
        base = (args.http or local.url).rstrip("/")
        results = measure(base, max(1, int(args.http_rounds)))
    _print(results)
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return results


def measure(base: str, rounds: int) -> dict:
    health = requests.get(f"{base}/health", timeout=30).json()
    idle = health["process"]["rss_bytes"]
    voice = health["default_voice"]
    _speech(base, voice, SHORT, stream=True)  # warm the path, not counted
    ttfa = [_speech(base, voice, SHORT, stream=True)[0] for _ in range(rounds)]
    by_length = {}
    for name, text in LENGTHS.items():
        runs = [_speech(base, voice, text, stream=False) for _ in range(rounds)]
        seconds = statistics.median(total for total, _ in runs)
        audio = statistics.median(audio for _, audio in runs)
        by_length[name] = {"characters": len(text), "generation_ms": round(seconds * 1000, 1),
                           "audio_seconds": round(audio, 2), "rtf": round(seconds / audio, 3) if audio else None}
    started = time.perf_counter()
    count = max(rounds * 2, 10)
    for _ in range(count):
        _speech(base, voice, SHORT, stream=False)
    per_minute = count / (time.perf_counter() - started) * 60
    after = requests.get(f"{base}/health", timeout=30).json()
    return {
        "url": base, "backend": health["backend"], "model": health["model"].get("id"), "voice": voice,
        "rounds": rounds,
        "ttfa_ms": round(statistics.median(ttfa) * 1000, 1),
        "ttfa_all_ms": [round(value * 1000, 1) for value in ttfa],
        "generation": by_length,
        "requests_per_minute_sequential": round(per_minute, 1),
        "rss_idle_mb": round(idle / 2**20, 1) if idle else None,
        "rss_peak_mb": round(after["process"]["peak_rss_bytes"] / 2**20, 1)
        if after["process"].get("peak_rss_bytes") else None,
    }


def _speech(base: str, voice: str, text: str, *, stream: bool) -> tuple[float, float]:
    """(seconds to the first byte when streaming, else to the whole file; seconds of audio)."""
    started = time.perf_counter()
    body = {"model": "tts-1", "voice": voice, "input": text, "response_format": "pcm" if stream else "mp3"}
    with requests.post(f"{base}/v1/audio/speech", json=body, stream=stream, timeout=600,
                       headers={"X-Session-Id": uuid.uuid4().hex}) as response:
        response.raise_for_status()
        if stream:
            chunks = response.iter_content(chunk_size=None)
            next(chunks)
            first = time.perf_counter() - started
            size = sum(len(chunk) for chunk in chunks)
            return first, size / 48000  # the rest; 24 kHz 16-bit mono
        data = response.content
        elapsed = time.perf_counter() - started
    return elapsed, _mp3_seconds(data)


def _mp3_seconds(data: bytes) -> float:
    import io

    import av

    with av.open(io.BytesIO(data)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
        return samples / container.streams.audio[0].rate


def _print(r: dict) -> None:
    print(f"HTTP bench: {r['url']} ({r['backend']} backend, {r['model']}, voice {r['voice']}); "
          f"{r['rounds']} rounds, medians")
    print(f"  {'time to first audio (streamed pcm)':<44} {r['ttfa_ms']} ms")
    for name, g in r["generation"].items():
        label = f"whole mp3, {name} ({g['characters']} chars)"
        print(f"  {label:<44} {g['generation_ms']} ms for {g['audio_seconds']} s of audio (RTF {g['rtf']})")
    print(f"  {'requests per minute, one after another':<44} {r['requests_per_minute_sequential']}")
    print(f"  {'resident memory idle / peak':<44} {r['rss_idle_mb']} / {r['rss_peak_mb']} MB")
