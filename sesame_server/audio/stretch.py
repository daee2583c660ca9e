"""Pitch-preserving time-stretch for a block stream (Signalsmith Stretch via python-stretch).

python-stretch 0.3.1 (the newest release) only exposes a one-shot `process()`: each call
seeks, processes, flushes its tail and resets, so no state survives between calls. To
stream with it we cut the input into hops, stretch each hop together with enough context
on both sides that the part we keep is free of edge effects, and splice consecutive
windows WSOLA-style: the new window is shifted by up to `_MAX_LAG_S` to the lag that best
matches the previous window's tail, then crossfaded. Two independent phase-vocoder runs
over the same audio differ mostly by a small time shift, so the aligned crossfade is
seamless for voiced speech. Output length follows the input exactly (n / speed).
"""

from __future__ import annotations

import math

import numpy as np
from python_stretch.Signalsmith import Stretch

from sesame_server.audio.resample import as_mono_float32
from sesame_server.audio.units import FRAME_SECONDS, MAX_SPEED, MIN_SPEED

_HOP_S = 0.2  # input seconds kept from each window: splices per second vs. latency
_FIRST_HOP_S = FRAME_SECONDS  # a short first window gets the first audio out one frame sooner
_XFADE_S = 0.02  # splice crossfade (output seconds): two pitch periods of a low voice
_MAX_LAG_S = 0.01  # splice alignment search, +-: half the period of an 50 Hz voice
_SEED = 1  # fixed seed: the same request stretches the same way every time

_EMPTY = np.zeros(0, np.float32)


class TimeStretcher:
    """speed 2.0 halves the duration, 0.5 doubles it; pitch is unchanged."""

    def __init__(self, sample_rate: int, speed: float) -> None:
        speed = float(speed)
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
        self.sample_rate = int(sample_rate)
        self.speed = speed
        self.passthrough = speed == 1.0
        self._flushed = False
        if self.passthrough:
            return
        self._engine = Stretch(_SEED)
        self._engine.preset(1, float(self.sample_rate))
        self._engine.setTimeFactor(speed)
        block = self._engine.blockSamples()
        self._xfade = max(1, round(_XFADE_S * self.sample_rate))
        self._max_lag = max(1, round(_MAX_LAG_S * self.sample_rate))
        # Output samples past a splice point that must be clean: half an STFT block of
        # edge smear, the alignment search and the crossfade. Converted to input samples
        # (plus half an analysis block) this is the context each window carries.
        clean_out = block / 2 + self._max_lag + self._xfade
        self._context = math.ceil(block / 2 + speed * clean_out)
        min_hop = math.ceil(speed * self._max_lag) + 1  # the next splice needs room to search
        self._hop = max(round(_HOP_S * self.sample_rate), min_hop)
        self._first_hop = max(round(_FIRST_HOP_S * self.sample_rate), min_hop)
        self._input = _EMPTY  # input samples from global index self._input_start on
        self._input_start = 0
        self._pos = 0  # global input index where the next kept region starts
        self._tail: np.ndarray | None = None  # previous window's output awaiting crossfade
        fade = np.linspace(0.0, np.pi / 2, self._xfade, dtype=np.float64)
        self._fade_in = (np.sin(fade) ** 2).astype(np.float32)  # with fade_out sums to 1

    def process(self, block: np.ndarray) -> np.ndarray:
        samples = as_mono_float32(block)
        if self.passthrough:
            return samples
        if self._flushed:
            raise RuntimeError("TimeStretcher.process() after flush()")
        if len(samples):
            self._input = np.concatenate((self._input, samples))
        parts = []
        while True:
            hop = self._first_hop if self._tail is None else self._hop
            if self._input_end - self._pos < hop + self._context:
                break
            parts.append(self._run(self._pos + hop))
        return np.concatenate(parts) if parts else _EMPTY

    def flush(self) -> np.ndarray:
        """Stretch what is left, up to the end of the input; call once."""
        if self.passthrough or self._flushed:
            return _EMPTY
        self._flushed = True
        if self._input_end <= self._pos:
            return _EMPTY  # the held tail maps to input past the end
        return self._run(None)

    @property
    def _input_end(self) -> int:
        return self._input_start + len(self._input)

    def _out_index(self, input_index: int) -> int:
        # Signalsmith maps output sample j of a window to input sample j * speed.
        return round(input_index / self.speed)

    def _run(self, next_pos: int | None) -> np.ndarray:
        """Stretch one window and return the output for [pos, next_pos) (None: to the end)."""
        start = max(self._input_start, self._pos - self._context)
        stop = self._input_end if next_pos is None else next_pos + self._context
        window = self._input[start - self._input_start : stop - self._input_start]
        stretched = self._engine.process(window[np.newaxis, :])[0]
        first = self._out_index(self._pos) - self._out_index(start)
        last = len(stretched) if next_pos is None else self._out_index(next_pos) - self._out_index(start)

        lag = 0 if self._tail is None else self._best_lag(stretched, first)
        begin, end = first + lag, min(last + lag, len(stretched))
        kept = stretched[begin:end].copy()
        if len(kept) < last - first:  # final window shifted right: pad its silent end
            kept = np.concatenate((kept, np.zeros(last - first - len(kept), np.float32)))
        if self._tail is not None:
            n = min(len(self._tail), len(kept))
            kept[:n] = self._tail[:n] * (1.0 - self._fade_in[:n]) + kept[:n] * self._fade_in[:n]
        self._tail = None if next_pos is None else stretched[end : end + self._xfade].copy()

        if next_pos is not None:
            self._pos = next_pos
            drop = max(0, self._pos - self._context - self._input_start)
            self._input = self._input[drop:]
            self._input_start += drop
        return kept

    def _best_lag(self, stretched: np.ndarray, first: int) -> int:
        """Shift of the new window that best lines it up with the previous tail."""
        tail = self._tail
        lo = max(-self._max_lag, -first)
        hi = min(self._max_lag, len(stretched) - first - len(tail))
        if hi <= lo:
            return 0
        candidates = stretched[first + lo : first + hi + len(tail)].astype(np.float64)
        tail64 = tail.astype(np.float64)
        corr = np.correlate(candidates, tail64, mode="valid")
        power = np.convolve(candidates * candidates, np.ones(len(tail)), mode="valid")
        if float(np.dot(tail64, tail64)) < 1e-9 or float(power.max()) < 1e-9:
            return 0  # silence: nothing to line up
        score = corr / np.sqrt(power + 1e-12)
        return lo + int(np.argmax(score))
