"""`sesame-tts bench --transport`: time to first audio over the WebSocket against HTTP /stream.

Starts the real server (waitress, the configured backend) on a free loopback port and asks
for the same sentence both ways, rounds alternating which goes first:
  HTTP  POST /v1/text-to-speech/{voice}/stream (pcm_24000): until the first body byte;
  WS    multi-stream-input, the socket already open (LiveKit and Pipecat keep one per
        session): the sentence sent in one message with flush, until the first audio message.
After its first audio each request is abandoned (the HTTP client hangs up, the WebSocket
closes the context: a barge-in), which stops its generation within one frame; the next
request starts once the engine is idle, so neither waits behind the other. Conversation
memory is off: every request starts from the same (empty) context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import requests
from websockets.sync.client import connect

from sesame_server.bench_server import local_server
from sesame_server.config import Settings

TRANSPORT_TEXT = "Sure, I can help with that: the weather today is clear and bright."
FORMAT = "pcm_24000"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transport", action="store_true",
                        help="time to first audio, WebSocket vs HTTP /stream, on a local server with BACKEND")
    parser.add_argument("--transport-rounds", type=int, default=7, help="--transport: rounds (default 7)")


def run(args: argparse.Namespace, settings: Settings) -> dict:
    with local_server(settings.replace(context_enabled=False)) as server:
        rt, base = server.runtime, server.url
        voice = rt.catalogue.default.id
        text = getattr(args, "text", None) or TRANSPORT_TEXT
        http_ms, ws_ms = [], []
        with connect(f"{base.replace('http', 'ws')}/v1/text-to-speech/{voice}/multi-stream-input"
                     f"?output_format={FORMAT}&inactivity_timeout=180", max_size=None, open_timeout=60) as ws:
            rounds = max(1, int(args.transport_rounds))
            for index in range(rounds + 1):  # the first round warms both paths: not counted
                order = (_http, _websocket) if index % 2 else (_websocket, _http)
                for measure in order:
                    ms = measure(base, voice, text) if measure is _http else measure(ws, text, f"r{index}")
                    if index:
                        (http_ms if measure is _http else ws_ms).append(ms)
                    _wait_idle(rt.engine)
        results = {
            "backend": rt.engine.info.name,
            "random_weights": settings.random_weights if rt.engine.info.name == "csm" else None,
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
            "text": text,
            "rounds": len(http_ms),
            "http_stream_ttfa_ms": round(statistics.median(http_ms), 1),
            "websocket_ttfa_ms": round(statistics.median(ws_ms), 1),
            "ratio_ws_over_http": round(statistics.median(ws_ms) / statistics.median(http_ms), 3),
            "http_all_ms": [round(v, 1) for v in http_ms],
            "websocket_all_ms": [round(v, 1) for v in ws_ms],
        }
    _print(results)
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return results


def _http(base: str, voice: str, text: str) -> float:
    started = time.perf_counter()
    with requests.post(f"{base}/v1/text-to-speech/{voice}/stream?output_format={FORMAT}", json={"text": text},
                       stream=True, timeout=600) as response:
        response.raise_for_status()
        next(response.iter_content(chunk_size=None))
        first = time.perf_counter() - started
    return first * 1000  # leaving the block hangs up: the server stops generating


def _websocket(ws, text: str, context_id: str) -> float:
    started = time.perf_counter()
    ws.send(json.dumps({"text": f"{text} ", "context_id": context_id, "flush": True}))
    first = None
    while True:
        message = json.loads(ws.recv(timeout=600))
        if "error" in message:
            raise RuntimeError(message)
        if first is None and message.get("audio"):
            first = time.perf_counter() - started
            ws.send(json.dumps({"context_id": context_id, "close_context": True}))  # a barge-in: stops it
        if message.get("isFinal"):
            return (first or 0.0) * 1000


def _wait_idle(engine, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (engine.current is not None or engine.queue_depth) and time.monotonic() < deadline:
        time.sleep(0.01)


def _print(r: dict) -> None:
    print(f"Transport bench: {r['backend']} backend; {r['machine']}; {r['rounds']} rounds, medians")
    print(f"  {'HTTP /stream: ms to first audio byte':<44} {r['http_stream_ttfa_ms']}")
    print(f"  {'WebSocket: ms to first audio message':<44} {r['websocket_ttfa_ms']}")
    print(f"  {'ratio WebSocket / HTTP':<44} {r['ratio_ws_over_http']}")
