"""`sesame-tts bench`: our CSM frame loop against the reference implementation, same weights,
same run: mlx-audio's loop for `csm` (MLX), transformers' `generate()` for `--backend
csm-torch` (PyTorch; csm_torch.bench adds its three parity checks).

    sesame-tts bench                                   real weights (MODEL_PATH / hub cache)
    sesame-tts bench --random-weights --flavor small   random weights, no download
    sesame-tts bench --random-weights --flavor full --frames 3    real CSM-1B shapes
    sesame-tts bench --backend csm-torch --random-weights --flavor small

Measures, with the voice prompt cold and then warm: ms per frame (median) for our frame
loop and for the reference (mlx-audio: `SesameModel.generate_frame` as its `Model.generate`
drives it, a host sync per frame; transformers: `CsmForConditionalGeneration.generate`),
both producing codes only, their ratio; our full streaming loop
with Mimi decoding and Mimi's cost alone; time to first
audio split into prefill / first frame / first Mimi decode, tokens prefilled per request,
real-time factor and peak memory. Rounds alternate ours and the reference so a noisy
machine hurts both alike.

Per-request figures come from each stream's Generation; the yardsticks (codes-only loop,
reference loop, Mimi alone) are the runtime's public methods.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from sesame_server.audio.units import FRAME_SECONDS
from sesame_server.backends.base import Generation
from sesame_server.config import Settings
from sesame_server.engine.request import ContextTurn, SpeechRequest
from sesame_server.ops.memory import rss_bytes

from .backend import CsmBackend
from .voice_prompts import BUILTIN_VOICES

log = logging.getLogger(__name__)

BENCH_TEXT = "The quick brown fox jumps over the lazy dog, and then it takes a nap in the sun."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("csm", "csm-torch"), default="csm",
                        help="csm (MLX, against mlx-audio's loop) or csm-torch (PyTorch, against transformers' "
                             "generate)")
    parser.add_argument("--random-weights", action="store_true",
                        help="bench on random weights (no download; output is noise)")
    parser.add_argument("--flavor", choices=("tiny", "small", "full"), default=None,
                        help="random-weights size: full = the real CSM-1B shapes (default small)")
    parser.add_argument("--frames", type=int, default=40, help="frames per timed request (default 40)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating ours/reference rounds (default 2)")
    parser.add_argument("--voice", default=None, help="voice id (default DEFAULT_VOICE)")
    parser.add_argument("--text", default=BENCH_TEXT, help="text of the timed request")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    parser.add_argument("--no-parity", action="store_true",
                        help="csm-torch: skip the parity checks against transformers and MLX (run last)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")


def run(args: argparse.Namespace, settings: Settings, backend_type: type = CsmBackend,
        extra: Callable[[object], dict] | None = None) -> dict:
    """The bench on `backend_type` (CsmBackend or a subclass on another runtime); `extra(runtime)`
    adds its own figures last (csm-torch: the parity checks)."""
    frames = max(2, int(args.frames))
    if args.random_weights or args.flavor:
        settings = settings.replace(random_weights=args.flavor or "small")
    voice = args.voice or (settings.default_voice if settings.default_voice in BUILTIN_VOICES else "conversational_b")
    backend = backend_type(settings, max_frames_per_sentence=frames)
    backend.split_timings = True
    started = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - started
    runtime = backend.runtime
    runtime.reset_peak_memory()
    request = _request(args.text, voice)

    # Compile and JIT once outside the timings (the server does this in its warm-up).
    backend.warmup()
    runtime.forget_voice_prefixes()  # so the first timed request sees a cold voice prefix

    cold = _timed_request(backend, request)
    ours, streaming, reference, reference_first = [], [], [], []
    warm = None
    for _ in range(max(1, int(args.rounds))):
        warm = _timed_request(backend, request)
        streaming += warm["intervals"]
        ours += runtime.codes_only_intervals(voice, args.text, frames)
        if not args.no_reference:
            timings: list[float] = []
            runtime.reference_codes(voice, args.text, frames, timings=timings)
            reference += timings[1:]
            reference_first.append(timings[0] if timings else None)
    decode_ms = _median_ms(_decode_times(runtime, warm["generation"]))
    conversation = _conversation_turn(backend, request)

    ms = _median_ms(ours)
    streaming_ms = _median_ms(streaming)
    reference_ms = _median_ms(reference) if reference else None
    status = backend.status()
    results = {
        "model_id": status["model_id"],
        "random_weights": settings.random_weights,
        "flavor": settings.random_weights,
        "quantize": settings.quantize,
        "device": status["device"],
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "frames": frames,
        "rounds": int(args.rounds),
        "ms_per_frame": ms,
        "ms_per_frame_streaming": streaming_ms,
        "mimi_decode_ms": decode_ms,
        "reference_ms_per_frame": reference_ms,
        "speedup": round(reference_ms / ms, 3) if reference_ms and ms else None,
        "first_audio_frames": warm["first_audio_frames"],
        "prefill_tokens_cold": cold["prefill_tokens"],
        "prefill_tokens_warm": warm["prefill_tokens"],
        "request_text_tokens": warm["request_text_tokens"],
        "ttfa_ms": warm["ttfa_ms"],
        "ttfa_cold_ms": cold["ttfa_ms"],
        "reference_first_frame_ms": _median_ms(reference_first) if reference_first else None,
        "context_turn": conversation,
        "rtf": round(streaming_ms / (FRAME_SECONDS * 1000), 3) if streaming_ms else None,
        "peak_memory_gb": round(peak / 1e9, 3) if (peak := runtime.memory()[1]) is not None else None,
        "reference": runtime.REFERENCE,
        "rss_gb": round(rss / 1e9, 3) if (rss := rss_bytes()) is not None else None,
        "load_s": round(load_s, 2),
        "dtype": status["dtype"],
        "config": runtime.config,
    }
    if extra is not None:
        results.update(extra(runtime))
    _print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")
    backend.unload()
    return results


def _request(text: str, voice: str, request_id: str = "bench", context: tuple = ()) -> SpeechRequest:
    return SpeechRequest(text=text, voice=voice, request_id=request_id, seed=0, stream=True, context=context)


def _conversation_turn(backend: CsmBackend, request: SpeechRequest) -> dict:
    """A second turn conditioned on the first: continuing the cached KV state vs a full prefill."""
    first = _timed_request(backend, request)
    context = tuple(ContextTurn(text=text, codes=codes, turn_id=request.request_id)
                    for text, codes in first["generation"].segments)
    turn = _request("And that is the end of the story.", request.voice, "bench-turn-2", context)
    continued = _timed_request(backend, turn)
    _timed_request(backend, replace(request, request_id="bench-other"))  # the cache moves on
    full = _timed_request(backend, turn)
    return {
        "prefill_tokens_continued": continued["prefill_tokens"],
        "prefill_tokens_full": full["prefill_tokens"],
        "ttfa_continued_ms": continued["ttfa_ms"]["total"],
        "ttfa_full_ms": full["ttfa_ms"]["total"],
    }


def _timed_request(backend: CsmBackend, request: SpeechRequest) -> dict:
    """One streamed request; intervals between PCM blocks after the first are ms/frame."""
    stamps = []
    first_audio_frames = None
    frames_before = backend.counters.frames_generated
    stream = backend.stream(request, threading.Event())
    while True:
        try:
            next(stream)
        except StopIteration as stop:
            generation: Generation = stop.value
            break
        stamps.append(time.perf_counter())
        if first_audio_frames is None:
            first_audio_frames = backend.counters.frames_generated - frames_before
    timings = generation.timings
    return {
        "generation": generation,
        "intervals": [b - a for a, b in zip(stamps, stamps[1:])],
        "first_audio_frames": first_audio_frames,
        "prefill_tokens": generation.prefill_tokens,
        "request_text_tokens": generation.text_tokens,
        "ttfa_ms": {
            "prefill": _ms(timings.get("prefill")),
            "first_frame": _ms(timings.get("first_frame")),
            "first_decode": _ms(timings.get("first_decode")),
            "total": _ms(timings.get("first_audio")),
        },
    }


def _decode_times(runtime, generation: Generation) -> list[float]:
    """Mimi's streaming decode of one frame, alone (it runs between frames in our loop)."""
    if not generation.segments:
        return []
    times = runtime.decode_seconds(np.concatenate([codes for _, codes in generation.segments], axis=1))
    return times[1:] or times  # the first frame pays for compilation


def _median_ms(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values) * 1000, 2) if values else None


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _print_table(r: dict) -> None:
    def row(name: str, value) -> None:
        print(f"  {name:<40} {value}")

    print(f"CSM bench: {r['model_id']} ({r['dtype']}, quantize={r['quantize']}, {r['device']}; {r['machine']})")
    row("frames per request x rounds", f"{r['frames']} x {r['rounds']}")
    row("ours: ms/frame (median, codes)", r["ms_per_frame"])
    row(f"{r['reference']}: ms/frame (codes)", r["reference_ms_per_frame"])
    row("speedup (reference / ours)", f"{r['speedup']}x" if r["speedup"] else "-")
    row("ours streaming incl. Mimi: ms/frame", r["ms_per_frame_streaming"])
    row("Mimi decode alone: ms/frame", r["mimi_decode_ms"])
    row("real-time factor (streaming)", r["rtf"])
    row("first audio after frames", r["first_audio_frames"])
    row("prefill tokens: cold voice / warm voice", f"{r['prefill_tokens_cold']} / {r['prefill_tokens_warm']}")
    row("request text tokens", r["request_text_tokens"])
    t, c = r["ttfa_ms"], r["ttfa_cold_ms"]
    row("TTFA warm ms: prefill/first frame/decode", f"{t['prefill']} / {t['first_frame']} / {t['first_decode']}"
        f"  (total {t['total']})")
    row("TTFA cold ms: prefill/first frame/decode", f"{c['prefill']} / {c['first_frame']} / {c['first_decode']}"
        f"  (total {c['total']})")
    row("reference: prefill + first frame ms", r["reference_first_frame_ms"])
    turn = r["context_turn"]
    row("turn 2 prefill tokens: continued / full", f"{turn['prefill_tokens_continued']} / {turn['prefill_tokens_full']}")
    row("turn 2 TTFA ms: continued / full", f"{turn['ttfa_continued_ms']} / {turn['ttfa_full_ms']}")
    row("peak model memory GB / RSS GB", f"{r['peak_memory_gb']} / {r['rss_gb']}")
    parity = r.get("parity")
    if parity:
        generate, mlx, mimi = parity["generate"], parity["mlx"], parity["mimi"]
        row("parity 1: greedy frames = generate()", f"{generate['identical_frames']} of {generate['of']}")
        if isinstance(mlx, dict):
            row("parity 2: greedy frames = MLX loop", f"{mlx['identical_frames']} of {mlx['of']} "
                f"(first logits max diff {mlx['first_logits_max_abs_diff']:.2e})")
            row("parity 3: Mimi torch vs MLX max diff", f"{mimi['max_abs_diff']:.2e} "
                f"({mimi['relative_to_peak']:.2e} of peak, {mimi['samples']} samples)")
        else:
            row("parity 2 and 3 (MLX)", mlx)
