"""Our streaming frame loop on PyTorch, over transformers' CsmForConditionalGeneration weights.

transformers' `generate()` runs the backbone with a growing cache, then calls the depth
decoder's own `generate()` per frame (31 more forward passes through the generic generation
machinery) and returns codes only at the end. This loop does what the MLX loop does:
- the backbone KV cache is static for the whole window and starts from a cached voice
  prefix (kv_cache.py), so a request prefills only its own tokens;
- the depth decoder runs its 31 steps on fixed-size per-frame K/V buffers, straight through
  the layers (no generation machinery), so each frame is ~33 small forward passes;
- every frame is yielded as soon as its codes exist (first audio after one frame), the
  cancel event is checked every frame, sampling draws from an explicit torch.Generator;
- on CUDA the next frame is queued before this frame's codes are read back (the copy waits
  on an event, not on the device), so the end-of-speech check lags one frame as on Metal.

Attention is written here (RMSNorm, projections, RoPE and MLP are the model's own modules),
so the cache layout is ours and no transformers cache API is involved.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from sesame_server.backends.csm.loop_state import LoopState
from sesame_server.backends.csm.prompt import TokenFrames

from .kv_cache import BackboneCache
from .depth_graph import DepthGraphs
from .sampling import SamplingParams, draw, sample


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class TorchFrameLoop:
    def __init__(self, model, valid_ids: int, max_len: int | None = None, overlap: bool | None = None,
                 graphs: DepthGraphs | bool | None = None):
        self.model = model
        config = model.config
        self.device = model.lm_head.weight.device
        self.dtype = model.lm_head.weight.dtype
        self.overlap = (self.device.type == "cuda") if overlap is None else overlap
        self.codebooks = int(config.num_codebooks)
        self.vocab = int(config.vocab_size)
        self.valid_ids = min(int(valid_ids), self.vocab)
        self.max_len = min(int(max_len or config.max_position_embeddings), int(config.max_position_embeddings))
        backbone, depth = model.backbone_model, model.depth_decoder.model
        self._backbone_layers, self._depth_layers = backbone.layers, depth.layers
        attention = backbone.layers[0].self_attn
        self.cache = BackboneCache(len(backbone.layers), int(config.num_key_value_heads), attention.head_dim,
                                   self.max_len, self.dtype, self.device)
        self._rope = self._tables(backbone.rotary_emb, self.max_len)
        self._depth_rope = self._tables(depth.rotary_emb, self.codebooks + 1)
        depth_attention = depth.layers[0].self_attn
        shape = (len(depth.layers), 1, int(config.depth_decoder_config.num_key_value_heads), self.codebooks + 1,
                 depth_attention.head_dim)
        self._depth_keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._depth_values = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._audio_offsets = torch.arange(self.codebooks, device=self.device) * self.vocab
        self.state = LoopState()
        # The depth decoder's 31 steps as CUDA graphs (None: on CUDA; a DepthGraphs: the tests').
        if graphs is None:
            graphs = self.device.type == "cuda"
        self.graphs = graphs if isinstance(graphs, DepthGraphs) else DepthGraphs(self) if graphs else None

    def _tables(self, rotary, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions [0, length): [length, head_dim], the model's own RoPE (llama3)."""
        positions = torch.arange(length, device=self.device)[None]
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = rotary(probe, positions)
        return cos[0], sin[0]

    # -- attention through a stack of layers ----------------------------------------------

    def _layers(self, layers, x: torch.Tensor, start: int, rope, write: Callable) -> torch.Tensor:
        """x [1, T, D] at positions [start, start + T) through `layers`; K/V stored by `write`."""
        tokens = x.shape[1]
        cos, sin = rope[0][start:start + tokens][None, None], rope[1][start:start + tokens][None, None]
        mask = None
        if tokens > 1:  # causal within the new tokens, everything before them visible
            rows = torch.arange(tokens, device=self.device)[:, None] + start
            mask = torch.arange(start + tokens, device=self.device)[None, :] <= rows
        for index, layer in enumerate(layers):
            attention = layer.self_attn
            h = layer.input_layernorm(x)
            q = attention.q_proj(h).view(1, tokens, -1, attention.head_dim).transpose(1, 2)
            k = attention.k_proj(h).view(1, tokens, -1, attention.head_dim).transpose(1, 2)
            v = attention.v_proj(h).view(1, tokens, -1, attention.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = write(index, k, v)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attention.scaling,
                                                 enable_gqa=keys.shape[1] != q.shape[1])
            x = x + attention.o_proj(out.transpose(1, 2).reshape(1, tokens, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x

    # -- backbone -----------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, frames: TokenFrames) -> torch.Tensor:
        """Run the backbone over `frames` (appending to the cache); returns the last hidden state [1, D]."""
        if len(frames) == 0:
            raise ValueError("nothing to prefill")
        return self._backbone(self.embed(frames)[None])

    def embed(self, frames: TokenFrames) -> torch.Tensor:
        """Backbone inputs [n, D]: a frame is text (last column) or audio (the codebook
        columns), summed where masked in."""
        tokens = torch.as_tensor(frames.tokens, device=self.device, dtype=torch.long)
        mask = torch.as_tensor(frames.mask, device=self.device)
        text = self.model.embed_text_tokens(tokens[:, -1]) * mask[:, -1:].to(self.dtype)
        audio = self.model.backbone_model.embed_tokens.embed_audio_tokens(tokens[:, :-1] + self._audio_offsets)
        return text + (audio * mask[:, :-1, None].to(self.dtype)).sum(dim=1)

    def _backbone(self, h: torch.Tensor) -> torch.Tensor:
        start = self.cache.offset
        h = self._layers(self._backbone_layers, h, start, self._rope, self.cache.write)
        self.cache.advance(h.shape[1])
        return self.model.backbone_model.norm(h[:, -1:, :])[:, 0]

    def _backbone_step(self, codes: torch.Tensor) -> torch.Tensor:
        embeds = self.model.backbone_model.embed_tokens.embed_audio_tokens(codes + self._audio_offsets)
        return self._backbone(embeds.sum(dim=1, keepdim=True))

    # -- depth decoder ------------------------------------------------------------------

    def _depth_write(self, start: int):
        def write(layer: int, keys: torch.Tensor, values: torch.Tensor):
            end = start + keys.shape[2]
            self._depth_keys[layer, :, :, start:end] = keys
            self._depth_values[layer, :, :, start:end] = values
            return self._depth_keys[layer, :, :, :end], self._depth_values[layer, :, :, :end]
        return write

    def _depth(self, last_h: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
        """All codebooks of one frame: [1, codebooks] on the device (a captured graph's
        replay where there is one for this sampling rule)."""
        uniforms = draw(self.codebooks, generator, self.device)
        if self.graphs is not None:
            codes = self.graphs.run(last_h, params, uniforms)
            if codes is not None:
                return codes
        return self.depth_steps(last_h, params, uniforms)

    def depth_steps(self, last_h: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor,
                    temperature: torch.Tensor | None = None) -> torch.Tensor:
        """The depth decoder's steps for one frame, with no host sync, no random-number
        generator and the same shapes every frame: what a CUDA graph can capture."""
        depth = self.model.depth_decoder
        inner, heads = depth.model, depth.codebooks_head.weight
        code = sample(self.model.lm_head(last_h), params, self.valid_ids, uniforms[0], temperature)
        x = torch.cat([last_h[:, None, :], inner.embed_tokens(code)], dim=1)  # codebook 0: offset 0
        codes = [code]
        start = 0
        for position in range(1, self.codebooks):
            x = self._layers(self._depth_layers, inner.inputs_embeds_projector(x), start, self._depth_rope,
                             self._depth_write(start))
            out = inner.norm(x[:, -1])
            code = sample(out @ heads[position - 1], params, self.valid_ids, uniforms[position], temperature)
            codes.append(code)
            start = position + 1
            # The next step feeds this code at its own position, with codebook `position`'s ids.
            x = inner.embed_tokens(code + position * self.vocab)
        return torch.cat(codes, dim=1)

    # -- the loop -----------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, last_h: torch.Tensor, params: SamplingParams, generator: torch.Generator | None,
                 max_frames: int, cancel: threading.Event | None = None,
                 decode: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> Iterator[tuple[torch.Tensor, np.ndarray, torch.Tensor | None]]:
        """Yield (codes [1, codebooks] on the device, the same codes on the host, PCM or None).

        Stops at the end-of-speech frame (all codes zero), at `max_frames`, or when `cancel`
        is set; `self.state` then says which frames still need feeding before more text."""
        params = params.resolved(self.valid_ids)
        state = self.state = LoopState()
        codes = self._depth(last_h, params, generator)
        for index in range(max_frames):
            if cancel is not None and cancel.is_set():
                state.cancelled = True
                return
            more = index + 1 < max_frames
            host, upcoming = self._read_back(codes, params, generator, more)
            if not host.any():
                state.ended_with_eos = True
                state.unfed = [] if upcoming is not None else [host]  # a queued frame fed it already
                return
            state.frames.append(host)
            if not more:
                state.unfed = [host, np.zeros_like(host)]
            pcm = decode(codes) if decode is not None else None
            yield codes, host, pcm
            if upcoming is None and more:
                upcoming = self._depth(self._backbone_step(codes), params, generator)
            codes = upcoming

    def _read_back(self, codes: torch.Tensor, params: SamplingParams, generator, more: bool):
        """This frame's codes on the host, and (overlapped) the next frame already queued.

        Overlapped, frame t+1 is queued before frame t's codes are read: on CUDA the copy goes
        to pinned memory and waits on an event recorded before t+1, so reading frame t never
        waits for t+1's kernels. (On a CPU the same order runs eagerly; the tests use it to
        check the lagged end-of-speech bookkeeping.)"""
        if not (self.overlap and more):
            return codes[0].cpu().numpy().astype(np.int32), None
        if self.device.type == "cuda":
            host = torch.empty(codes.shape, dtype=codes.dtype, pin_memory=True)
            host.copy_(codes, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        else:
            host, ready = codes, None
        upcoming = self._depth(self._backbone_step(codes), params, generator)
        if ready is not None:
            ready.synchronize()  # this frame's copy only, not the frame queued after it
        return host[0].cpu().numpy().astype(np.int32), upcoming

    def closing_frames(self, width: int) -> TokenFrames:
        """Token frames that close the last generated segment (pending audio + end frame)."""
        return self.state.closing_frames(width)
