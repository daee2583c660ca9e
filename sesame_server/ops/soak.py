"""sesame-tts soak: a bounded, seeded load test of a loopback server over both dialects and their
formats, with ~30 % hang-ups and bursts past MAX_QUEUE_DEPTH. Every completed response is checked
as a listener would; the server is measured (RSS, threads, fds) after a warm-up and at the end.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import av
import psutil

from sesame_server.audio.formats import (CONTENT_TYPES, ELEVENLABS_FORMATS, ELEVENLABS_STREAM_FORMATS, OPENAI_FORMATS,
                                         elevenlabs_format, openai_format)
from sesame_server.config import Settings

# "Done when" (issue #9, part 7).
MAX_RSS_GROWTH = 0.05
MAX_IDLE_SECONDS = 1.0
FD_SLACK = 2  # sockets of hung-up clients the server has not closed yet when we look
HANG_UP_SHARE = 0.3
MIN_SECONDS_PER_CHARACTER = 0.02  # speech runs ~0.06 s a character: a third of that is cut short
OUTCOMES = ("ok", "hung_up", "busy", "lost", "garbled", "5xx")  # busy: 429 + Retry-After, which is right

SHORT = ("Hello there.", "Yes, that works for me.", "Turn left at the next light.", "Thanks, see you soon!",
         "The kettle is on.", "Is it going to rain today?")
MEDIUM = ("The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks "
          "were striking thirteen. Nobody in the room said a word.",
          "Your package left the warehouse this morning and should arrive on Thursday. If nobody is home, "
          "the driver will leave it with a neighbour. You can change the address until noon tomorrow.")
EL_ROUTES = {"": "audio", "/stream": "audio", "/with-timestamps": "json", "/stream/with-timestamps": "ndjson"}
FRAMING_TYPES = {"sse": "text/event-stream", "ndjson": "application/x-ndjson", "json": "application/json"}
DEMUXERS = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac", "wav": "wav"}
Address = tuple[str, int]  # (host, port); http.client never uses a proxy, so requests stay on loopback


@dataclass(frozen=True)
class Case:
    """One request of the mix, and how its client behaves."""

    path: str
    body: dict
    framing: str  # audio | sse | ndjson | json
    container: str
    sample_rate: int
    hang_up: str | None = None  # "read": after hang_at bytes; "wait": after hang_at ms, before any byte
    hang_at: int = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--requests", type=int, default=1000, help="requests in the mix (default 1000)")
    add("--concurrency", type=int, default=3, help="clients at once between bursts (default 3)")
    add("--seed", type=int, default=1, help="seed of the mix (default 1)")
    add("--timeout", type=float, default=1800.0, help="give up after this many seconds (default 1800)")
    add("--warmup", type=int, default=50, help="requests before the first measurement (default 50)")
    add("--burst-every", type=int, default=100, help="MAX_QUEUE_DEPTH + 4 clients at once every N (default 100)")
    add("--max-queue-depth", type=int, help="MAX_QUEUE_DEPTH (default: from the settings)")
    add("--backend", default="piper", help="backend of the server it starts (default piper)")
    add("--url", help="soak a running server instead (loopback only)")
    add("--pid", type=int, help="with --url: the server's process id, to measure it")
    add("--json", metavar="PATH", help="also write the report as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Soak and print the report: 0 every "done when" criterion met, 1 one failed, 2 could not run."""
    if args.url and not is_loopback_url(args.url):
        print(f"sesame-tts soak: refusing {args.url}: load tests only ever target loopback "
              "(http:// to 127.0.0.0/8, [::1] or localhost).", file=sys.stderr)
        return 2
    depth = settings.max_queue_depth if args.max_queue_depth is None else args.max_queue_depth
    headers = {"Authorization": f"Bearer {settings.api_key}"} if args.url and settings.api_key else {}
    report = {"target": args.url or f"own {args.backend} server, MAX_QUEUE_DEPTH {depth}",
              "machine": f"{os.cpu_count()}-CPU {os.uname().machine} {os.uname().sysname}", "requests": 0,
              "outcomes": dict.fromkeys(OUTCOMES, 0), "problems": [], "warm": None, "end": None,
              "idle_seconds": None, "busy_at_hang_up": None, "server_exit": None, "failures": []}
    started = time.monotonic()
    try:
        with _server(args, depth, started + args.timeout, report) as (server, pid):
            _soak(args, server, pid, headers, depth + 4, started + args.timeout, report)
    except (OSError, http.client.HTTPException, psutil.Error) as exc:
        print(f"sesame-tts soak: {exc}", file=sys.stderr)
        return 2
    report["seconds"] = round(time.monotonic() - started, 1)
    report["failures"] += _failures(report)
    print(_render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 1 if report["failures"] else 0


def is_loopback_url(url: str) -> bool:
    """http to 127.0.0.0/8, ::1 or localhost (which we then reach as 127.0.0.1, whatever it resolves to)."""
    parts = urlsplit(url)
    try:
        host = parts.hostname or ""
        return parts.scheme == "http" and (host == "localhost" or ipaddress.ip_address(host).is_loopback)
    except ValueError:
        return False


def _case(rng: random.Random, voice_id: str) -> Case:
    text = rng.choice(MEDIUM) if rng.random() < 0.3 else rng.choice(SHORT)
    if rng.random() < 0.5:
        fmt, sse = openai_format(rng.choice(OPENAI_FORMATS)), rng.random() < 0.3
        body = {"model": "tts-1", "voice": rng.choice(("alloy", "echo", "nova")), "input": text,
                "response_format": fmt.name, **({"stream_format": "sse"} if sse else {})}
        path, framing = "/v1/audio/speech", "sse" if sse else "audio"
    else:
        route = rng.choice(tuple(EL_ROUTES))
        streaming = route.startswith("/stream")
        fmt = elevenlabs_format(rng.choice(ELEVENLABS_STREAM_FORMATS if streaming else ELEVENLABS_FORMATS),
                                streaming=streaming)
        path, framing = f"/v1/text-to-speech/{voice_id}{route}?output_format={fmt.name}", EL_ROUTES[route]
        body = {"text": text, "model_id": "eleven_multilingual_v2"}
    hang_up = rng.choice(("read", "read", "wait")) if rng.random() < HANG_UP_SHARE else None
    hang_at = {"read": rng.randint(1, 8192), "wait": rng.randint(0, 300), None: 0}[hang_up]
    return Case(path, body, framing, fmt.container, fmt.sample_rate, hang_up, hang_at)


def _schedule(count: int, warmup: int, every: int, burst: int, concurrency: int) -> list[tuple[int, int, int]]:
    """(start, stop, clients at once): the warm-up, then runs of `concurrency` between bursts."""
    spans = [(0, warmup, concurrency)] if warmup else []
    while (start := spans[-1][1] if spans else 0) < count:
        stop = min(start + max(every - burst, 1), count) if every else count
        spans.append((start, stop, concurrency))
        if every and stop < count:
            spans.append((stop, min(stop + burst, count), min(burst, count - stop)))
    return spans


def send(server: Address, case: Case, headers: dict[str, str], timeout: float) -> tuple[str, str]:
    """(outcome, what was wrong): one of OUTCOMES."""
    connection, response, stage = http.client.HTTPConnection(*server, timeout=timeout), None, "lost"
    try:
        connection.request("POST", case.path, json.dumps(case.body), {"Content-Type": "application/json", **headers})
        if case.hang_up:  # RST, not FIN: the rudest close a client can do
            connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if case.hang_up == "wait":  # a buffered route is still generating
            time.sleep(case.hang_at / 1000)
            return "hung_up", ""
        response = connection.getresponse()
        stage = "garbled"  # the response began: failing now means it was cut short
        body = response.read(case.hang_at or None)
    except (OSError, http.client.HTTPException) as exc:
        return stage, f"{case.path}: {type(exc).__name__} {exc}"
    finally:
        connection.close()
        if response is not None:
            response.close()
    status, what = response.status, f"{case.path}: {response.status} {body[:200]!r}"
    if status == 429:
        return ("busy", "") if (response.getheader("Retry-After") or "").isdigit() else ("garbled", what)
    if status != 200:
        return "5xx" if status >= 500 else "garbled", what
    if case.hang_up:
        return "hung_up", ""
    problem = check(case, response.getheader("Content-Type") or "", body)
    return ("garbled", f"{case.path} {case.body}: {problem}") if problem else ("ok", "")


def check(case: Case, content_type: str, body: bytes) -> str | None:
    """None when a 200 response is what `case` asked for, else what is wrong with it."""
    expected = FRAMING_TYPES.get(case.framing) or CONTENT_TYPES[case.container]
    if not content_type.startswith(expected):
        return f"content type {content_type!r}, expected {expected}"
    try:
        seconds = audio_seconds(unframe(case.framing, body), case.container, case.sample_rate)
    except (ValueError, KeyError, TypeError, av.FFmpegError) as exc:
        return f"{type(exc).__name__}: {exc}"
    text = case.body.get("input") or case.body["text"]
    if seconds < MIN_SECONDS_PER_CHARACTER * len(text):
        return f"only {seconds:.2f} s of audio for {len(text)} characters"
    return None


def unframe(framing: str, body: bytes) -> bytes:
    """The audio inside a response body; ValueError/KeyError when the framing is broken."""
    if framing == "json":  # with no alignment, no audio either
        document = json.loads(body)
        return base64.b64decode(document["audio_base64"], validate=True) if document["alignment"]["characters"] else b""
    if framing == "ndjson":  # an error line has no audio_base64: KeyError
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        return b"".join(base64.b64decode(line["audio_base64"], validate=True) for line in lines)
    if framing == "audio":
        return body
    events = [json.loads(part.removeprefix("data: ")) for part in body.decode().split("\n\n") if part.strip()]
    if [event["type"] for event in events[-1:]] != ["speech.audio.done"] or any(
            event["type"] != "speech.audio.delta" for event in events[:-1]):
        raise ValueError("the SSE events are not audio deltas ending with speech.audio.done")
    return b"".join(base64.b64decode(event["audio"], validate=True) for event in events[:-1])


def audio_seconds(audio: bytes, container: str, sample_rate: int) -> float:
    """How long `audio` plays; ValueError when it does not decode as `container`."""
    if not audio or (container == "pcm" and len(audio) % 2):
        raise ValueError(f"{len(audio)} bytes are no {container} audio")
    if container in ("pcm", "ulaw", "alaw"):
        return len(audio) / (2 if container == "pcm" else 1) / sample_rate
    with av.open(io.BytesIO(audio), format=DEMUXERS[container]) as box:
        stream = box.streams.audio[0]
        samples, rate = sum(frame.samples for frame in box.decode(stream)), stream.codec_context.sample_rate
    if container != "opus" and rate != sample_rate:  # libopus decodes at 48 kHz whatever was encoded
        raise ValueError(f"{rate} Hz, expected {sample_rate}")
    return samples / rate


def _soak(args: argparse.Namespace, server: Address, pid: int | None, headers: dict[str, str], burst: int,
          deadline: float, report: dict) -> None:
    voice_id = json.loads(_get(server, "/v1/voices", headers)[1])["voices"][0]["voice_id"]
    rng = random.Random(args.seed)  # the same seed, the same requests and hang-ups
    cases = [_case(rng, voice_id) for _ in range(args.requests)]
    warm_after = min(args.warmup, len(cases))
    for start, stop, clients in _schedule(len(cases), warm_after, args.burst_every, burst, args.concurrency):
        if start == warm_after:
            report["warm"] = _measure(server, pid, headers)
        if time.monotonic() > deadline:
            report["failures"].append(f"timed out after {report['requests']} requests")
            break
        timeout = max(5.0, min(120.0, deadline - time.monotonic()))
        with ThreadPoolExecutor(clients) as pool:
            for outcome, problem in pool.map(lambda case: send(server, case, headers, timeout), cases[start:stop]):
                report["outcomes"][outcome] += 1
                report["problems"] += [problem] if problem and len(report["problems"]) < 20 else []
        report["requests"] = stop
    # The last hang-up: a long generation, so the engine is surely busy when the client leaves.
    body = {"model": "tts-1", "voice": "alloy", "input": " ".join(MEDIUM * 6), "response_format": "pcm"}
    outcome, problem = send(server, Case("/v1/audio/speech", body, "audio", "pcm", 0, "read", 16384), headers, 60.0)
    report["failures"] += [] if outcome == "hung_up" else [f"the last hang-up got {outcome} {problem}"]
    hung_up, report["busy_at_hang_up"] = time.monotonic(), not _wait_idle(server, headers, 0.0)
    report["idle_seconds"] = round(time.monotonic() - hung_up, 3) if _wait_idle(server, headers, 30.0) else None
    report["end"] = _measure(server, pid, headers)


def _wait_idle(server: Address, headers: dict[str, str], limit: float) -> bool:
    """True once /metrics shows nothing generating or queued; False if that takes over `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        lines = _get(server, "/metrics", headers)[1].decode().splitlines()
        values = dict(line.split(" ", 1) for line in lines if line.startswith("sesame_tts_") and " " in line)
        if float(values["sesame_tts_generating"]) == 0 == float(values["sesame_tts_queue_depth"]):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _measure(server: Address, pid: int | None, headers: dict[str, str]) -> dict | None:
    """RSS, threads and fds of the server once the engine is idle and its fds have settled."""
    if pid is None:
        return None
    _wait_idle(server, headers, 10.0)
    time.sleep(0.5)  # a hung-up client's socket closes a moment after its job ends
    process = psutil.Process(pid)
    return {"rss": process.memory_info().rss, "threads": process.num_threads(), "fds": process.num_fds()}


def _get(server: Address, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    with closing(http.client.HTTPConnection(*server, timeout=10)) as connection:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()


@contextmanager
def _server(args: argparse.Namespace, depth: int, deadline: float,
            report: dict) -> Iterator[tuple[Address, int | None]]:
    """(address, pid): --url's, or our own server's on a free loopback port, stopped with SIGTERM."""
    if args.url:
        parts = urlsplit(args.url)
        yield ("127.0.0.1" if parts.hostname == "localhost" else parts.hostname, parts.port or 80), args.pid
        return
    with tempfile.TemporaryDirectory(prefix="sesame-soak-") as cache, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port, log = str(probe.getsockname()[1]), Path(cache, "server.log")
        probe.close()
        env = {**os.environ, "HOST": "127.0.0.1", "BACKEND": args.backend, "CACHE_DIR": cache, "API_KEY": "",
               "MAX_QUEUE_DEPTH": str(depth), "WARMUP_ON_START": "true", "IDLE_UNLOAD_MINUTES": "0"}
        command = [sys.executable, "-m", "sesame_server", "--env-file", os.devnull, "serve", "--port", port]
        with log.open("wb") as out:  # the server keeps its own copy of the fd
            server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield _wait_healthy(("127.0.0.1", int(port)), server, deadline, log), server.pid
        finally:
            server.terminate()  # SIGTERM: the server's clean stop
            try:
                report["server_exit"] = server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                report["server_exit"] = server.wait()


def _wait_healthy(address: Address, server: subprocess.Popen, deadline: float, log: Path) -> Address:
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if _get(address, "/ready", {})[0] == 200:
                return address
        except (OSError, http.client.HTTPException):
            pass  # not listening yet
        time.sleep(0.2)
    raise ChildProcessError(f"the server did not come up:\n{log.read_text(errors='replace')[-2000:]}")


def _failures(report: dict) -> list[str]:
    warm, end, outcomes = report["warm"], report["end"], report["outcomes"]
    failures = [f"{outcomes[kind]} {kind}" for kind in ("lost", "garbled", "5xx") if outcomes[kind]]
    if warm and end and end["rss"] > warm["rss"] * (1 + MAX_RSS_GROWTH):
        failures.append(f"RSS grew more than {MAX_RSS_GROWTH:.0%} after the warm-up")
    if warm and end and (end["threads"] > warm["threads"] or end["fds"] > warm["fds"] + FD_SLACK):
        failures.append("threads or fds grew")
    if report["idle_seconds"] is None or report["idle_seconds"] >= MAX_IDLE_SECONDS:
        failures.append(f"the engine was not idle {MAX_IDLE_SECONDS:.0f} s after the last hang-up")
    if report["server_exit"] not in (0, None):  # None: --url, not ours to stop
        failures.append(f"the server stopped with exit {report['server_exit']}")
    return failures


def _render(report: dict) -> str:
    warm, end, idle, mib = report["warm"], report["end"], report["idle_seconds"], 2**20
    lines = [f"sesame-tts soak: {report['requests']} requests, {report['target']}, {report['machine']}, "
             f"{report['seconds']} s", "  " + ", ".join(f"{kind} {n}" for kind, n in report["outcomes"].items()),
             *(f"    {problem}" for problem in report["problems"])]
    if warm and end:
        lines += [f"  RSS {warm['rss'] / mib:.1f} MiB after the warm-up, {end['rss'] / mib:.1f} MiB at the end "
                  f"({end['rss'] / warm['rss'] - 1:+.1%})",
                  f"  threads {warm['threads']} -> {end['threads']}, fds {warm['fds']} -> {end['fds']}"]
    lines.append(f"  engine idle {'never' if idle is None else f'{idle:.3f} s'} after the last hang-up "
                 f"(generating then: {report['busy_at_hang_up']}); server exit {report['server_exit']}")
    return "\n".join(lines + ["FAIL: " + "; ".join(report["failures"]) if report["failures"] else "PASS"])
