"""The frame loop: prefill, then one backbone step + 31 depth-decoder steps per 80 ms frame.

What it does differently from mlx-audio's `Model.generate`:
- the backbone KV cache is preallocated for the whole window and can start from a cached
  voice prefix (see kv_cache.py), so a request prefills only its own tokens;
- the depth decoder runs as `mx.compile`d single-token steps over a preallocated, reused
  per-frame K/V buffer (fixed shapes, so one trace serves every step of every frame;
  temperature is an input, not a constant, so requests do not recompile);
- no host sync per frame on the critical path where dispatch is asynchronous (Metal): frame
  t+1 is queued with `mx.async_eval` before frame t is read back, so the end-of-speech check
  lags one frame and decoding audio overlaps the next frame's compute. On CPU builds
  async_eval blocks on big graphs, so there each frame's audio goes out before the next
  frame is queued (lowest latency; see `overlap`).
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import mlx.core as mx
import numpy as np

from .kv_cache import BackboneCache
from .loop_state import LoopState
from .prompt import TokenFrames
from .sampling import SamplingParams, sample


class FrameLoop:
    def __init__(
        self, model, valid_ids: int, compiled: bool = True, max_len: int | None = None, overlap: bool | None = None
    ):
        self.model = model
        # Overlap (queue frame t+1 before reading frame t, decode on a second stream) pays
        # where dispatch is asynchronous (Metal). On CPU builds `mx.async_eval` of a graph of
        # hundreds of ops blocks until nearly all of it ran, so there queuing the next frame
        # first would only hold back frame t's audio by one frame.
        self.overlap = (mx.default_device().type == mx.gpu) if overlap is None else overlap
        args = model.args
        self.codebooks = int(args.audio_num_codebooks)
        self.vocab = int(args.audio_vocab_size)
        self.valid_ids = min(int(valid_ids), self.vocab)
        self.max_len = int(max_len or args.max_position_embeddings or 2048)
        self.max_len = min(self.max_len, 2048)  # mlx-audio's RoPE tables stop at 2048
        self.compiled = compiled
        self.cache = BackboneCache(len(model.backbone.layers), self.max_len)
        self._offsets = mx.arange(self.codebooks, dtype=mx.int32) * self.vocab
        self._depth_fns: dict[tuple[bool, int], tuple] = {}
        self._depth_kv: tuple[list, list] | None = None
        self._positions = mx.arange(self.codebooks + 1, dtype=mx.int32)
        self._pos_arrays = [mx.array(i, dtype=mx.int32) for i in range(self.codebooks + 1)]
        # Ids of codebook i live at [i * vocab, (i + 1) * vocab) of audio_embeddings.
        self._codebook_offsets = [mx.array(i * self.vocab, dtype=mx.int32) for i in range(self.codebooks)]
        rope = model.decoder.layers[0].self_attn.rope
        theta = rope._apply_scaling(1.0 / (rope.base ** (mx.arange(0, rope.dim, 2, dtype=mx.float32) / rope.dim)))
        self._rope_freqs = 1.0 / theta  # mx.fast.rope wants periods, not angular rates
        mx.eval(self._positions, self._pos_arrays, self._codebook_offsets, self._rope_freqs)
        self.state = LoopState()

    # -- backbone ---------------------------------------------------------------------

    def prefill(self, frames: TokenFrames) -> mx.array:
        """Run the backbone over `frames` (appending to the cache); returns the last hidden state."""
        if len(frames) == 0:
            raise ValueError("nothing to prefill")
        tokens = mx.array(frames.tokens)[None]
        mask = mx.array(frames.mask)[None]
        embeds = self.model._embed_tokens(tokens)
        h = mx.sum(embeds * mx.expand_dims(mask, -1), axis=2)
        h = self.model.backbone(h, cache=self.cache.layers)
        return h[:, -1, :]

    def _backbone_step(self, codes: mx.array) -> mx.array:
        h = mx.sum(self.model.audio_embeddings(codes + self._offsets), axis=1, keepdims=True)
        h = self.model.backbone(h, cache=self.cache.layers)
        return h[:, -1, :]

    # -- depth decoder ----------------------------------------------------------------
    #
    # One compiled function per depth step, traced once: positions are arrays and the
    # per-frame K/V buffers have a fixed length (codebooks + 1) with a position mask, so
    # every step of every frame reuses the same compiled graph. (Compiling the whole
    # unrolled 31-step frame instead takes minutes of C++ compilation on CPU builds.)

    def _depth_fn(self, params: SamplingParams):
        key = (params.greedy, params.top_k)
        fns = self._depth_fns.get(key)
        if fns is None:
            fns = self._make_depth_fns(params)
            self._depth_fns[key] = fns
        return fns

    def _decoder_layers(self, x: mx.array, pos: mx.array | None, kbufs: list, vbufs: list):
        """Tokens through the depth decoder; their K/V written into the per-frame buffers.

        `pos` None: `x` holds the frame's first tokens (positions 0..T-1, static shapes);
        otherwise one token at position `pos` (an array, so every step shares one trace).
        Returns the normalised output of the last token only.
        """
        tokens = x.shape[1]
        if pos is None:
            rows = mx.arange(tokens, dtype=mx.int32)[:, None]
            mask = mx.where(self._positions[None, :] <= rows, 0.0, -mx.inf).astype(x.dtype)
            offset = 0
        else:
            onehot = (self._positions == pos)[None, None, :, None]
            mask = mx.where(self._positions <= pos, 0.0, -mx.inf).astype(x.dtype)[None, :]
            offset = pos
        new_k, new_v = [], []
        layers = self.model.decoder.layers
        for index, layer in enumerate(layers):
            attn = layer.self_attn
            heads, kv_heads, head_dim = attn.n_heads, attn.n_kv_heads, attn.head_dim
            h = mx.fast.rms_norm(x, layer.input_layernorm.weight, layer.input_layernorm.eps)
            k = attn.k_proj(h).reshape(1, tokens, kv_heads, head_dim).transpose(0, 2, 1, 3)
            v = attn.v_proj(h).reshape(1, tokens, kv_heads, head_dim).transpose(0, 2, 1, 3)
            k = mx.fast.rope(k, head_dim, traditional=True, base=None, scale=1.0, offset=offset, freqs=self._rope_freqs)
            if pos is None:
                keys = mx.concatenate([k, kbufs[index][:, :, tokens:]], axis=2)
                values = mx.concatenate([v, vbufs[index][:, :, tokens:]], axis=2)
            else:
                keys = mx.where(onehot, k, kbufs[index])
                values = mx.where(onehot, v, vbufs[index])
            new_k.append(keys)
            new_v.append(values)
            q_offset = offset
            if index == len(layers) - 1 and tokens > 1:
                # Only the last token's output is used: the last layer skips the others.
                x, h, mask = x[:, -1:], h[:, -1:], mask[-1:]
                q_offset = tokens - 1
            rows = x.shape[1]
            q = attn.q_proj(h).reshape(1, rows, heads, head_dim).transpose(0, 2, 1, 3)
            q = mx.fast.rope(q, head_dim, traditional=True, base=None, scale=1.0, offset=q_offset, freqs=self._rope_freqs)
            if self.overlap:
                out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=attn.scale, mask=mask[None, None])
            else:
                # CPU: mx.fast's attention falls back to more ops than this grouped form.
                group = heads // kv_heads
                grouped = (q * attn.scale).reshape(1, kv_heads, group * rows, head_dim)
                scores = grouped @ keys.transpose(0, 1, 3, 2) + mx.tile(mask, (group, 1))
                out = (mx.softmax(scores, axis=-1, precise=True) @ values).reshape(1, heads, rows, head_dim)
            x = x + attn.o_proj(out.transpose(0, 2, 1, 3).reshape(1, rows, -1))
            h = mx.fast.rms_norm(x, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.eps)
            x = x + layer.mlp(h)
        norm = self.model.decoder.norm
        return mx.fast.rms_norm(x[:, -1, :], norm.weight, norm.eps), new_k, new_v

    def _make_depth_fns(self, params: SamplingParams):
        model, valid = self.model, self.valid_ids

        def first(last_h, key0, key1, inv_temperature, kbufs, vbufs):
            """Codebook 0 from the backbone, then codebook 1 from [backbone state, code 0]."""
            c0 = sample(model.codebook0_head(last_h), key0, params, valid, inv_temperature)
            x = mx.concatenate([last_h[:, None, :], model._embed_audio(0, c0)], axis=1)
            out, kbufs, vbufs = self._decoder_layers(model.projection(x), None, kbufs, vbufs)
            c1 = sample(out @ model.audio_head[0], key1, params, valid, inv_temperature)
            return c0, c1, kbufs, vbufs

        def step(previous, codebook_offset, pos, head, key, inv_temperature, kbufs, vbufs):
            """Feed the previous codebook's id at `pos`; sample the next codebook."""
            x = model.projection(model.audio_embeddings(previous + codebook_offset))
            out, kbufs, vbufs = self._decoder_layers(x, pos, kbufs, vbufs)
            return sample(out @ head, key, params, valid, inv_temperature), kbufs, vbufs

        if self.compiled:
            return mx.compile(first), mx.compile(step)
        return first, step

    def _depth(self, fns, last_h: mx.array, key: mx.array, inv_temperature: mx.array) -> mx.array:
        """All codebooks of one frame: [1, codebooks] int32 (lazy)."""
        first, step = fns
        keys = mx.random.split(key, self.codebooks)
        kbufs, vbufs = self._depth_buffers(last_h.dtype)
        c0, code, kbufs, vbufs = first(last_h, keys[0], keys[1], inv_temperature, kbufs, vbufs)
        codes = [c0, code]
        head = self.model.audio_head
        for i in range(2, self.codebooks):
            code, kbufs, vbufs = step(
                code, self._codebook_offsets[i - 1], self._pos_arrays[i], head[i - 1], keys[i],
                inv_temperature, kbufs, vbufs,
            )
            codes.append(code)
            if not self.overlap:
                # Synchronous dispatch (CPU): hand each step over as soon as it is built, so
                # building the next step's graph overlaps this one's compute.
                mx.async_eval(code)
        return mx.concatenate(codes, axis=1)

    def _depth_buffers(self, dtype):
        """The depth decoder's K/V buffers: allocated once, reused as every frame's start."""
        if self._depth_kv is None or self._depth_kv[0][0].dtype != dtype:
            shapes = [
                (1, layer.self_attn.n_kv_heads, self.codebooks + 1, layer.self_attn.head_dim)
                for layer in self.model.decoder.layers
            ]
            self._depth_kv = ([mx.zeros(s, dtype) for s in shapes], [mx.zeros(s, dtype) for s in shapes])
            mx.eval(self._depth_kv)
        return self._depth_kv

    # -- the loop -----------------------------------------------------------------------

    def generate(
        self,
        last_h: mx.array,
        params: SamplingParams,
        key: mx.array,
        max_frames: int,
        cancel: threading.Event | None = None,
        decode: Callable[[mx.array], mx.array] | None = None,
    ) -> Iterator[tuple[mx.array, np.ndarray, mx.array | None]]:
        """Yield (codes [1, codebooks] on device, the same codes on host, lazy PCM or None).

        Stops at the end-of-speech frame (all codes zero), at `max_frames`, or when `cancel`
        is set. `self.state` then says which frames still need feeding before more text.
        `decode(codes)` builds the frame's audio (the caller picks its stream).
        """
        params = params.resolved(self.valid_ids)
        fns = self._depth_fn(params)
        inv_t = mx.array(1.0 if params.greedy else 1.0 / params.temperature, dtype=mx.float32)
        state = self.state = LoopState()

        def frame(previous_h: mx.array) -> mx.array:
            nonlocal key
            key, sub = mx.random.split(key)
            codes = self._depth(fns, previous_h, sub, inv_t)
            mx.async_eval(codes)
            return codes

        codes = frame(last_h)
        for index in range(max_frames):
            if cancel is not None and cancel.is_set():
                state.cancelled = True
                return
            more = index + 1 < max_frames
            upcoming = None
            if self.overlap and more:
                # Queue frame t+1 before reading frame t back: the device never waits for
                # the host, and the end-of-speech check lags one frame.
                upcoming = frame(self._backbone_step(codes))
            host = np.array(codes)[0]
            if not host.any():
                state.ended_with_eos = True
                # A queued frame t+1 fed the end frame to the backbone; otherwise feed it later.
                state.unfed = [] if upcoming is not None else [host]
                return
            state.frames.append(host)
            if not more:
                state.unfed = [host, np.zeros_like(host)]
            pcm = decode(codes) if decode is not None else None
            if pcm is not None and self.overlap:
                mx.async_eval(pcm)
            yield codes, host, pcm
            if not self.overlap and more:
                # Synchronous dispatch (CPU): the audio went out first, now the next frame.
                upcoming = frame(self._backbone_step(codes))
            codes = upcoming

    def closing_frames(self, width: int) -> TokenFrames:
        """Token frames that close the last generated segment (pending audio + end frame)."""
        return self.state.closing_frames(width)
