"""Mimi on torch: encode voice prompts to codes, decode generated codes to 24 kHz PCM frame by frame.

The same API as the MLX backend's `MimiCodec` (backends/csm/codec.py). transformers' MimiModel
only decodes whole sequences, so the decoder is streamed here, one 80 ms frame per call, with
the state every causal layer needs to give exactly the samples a whole-sequence decode gives:

- causal Conv1d: the last `padding_total` inputs are kept as the next chunk's left context
  (zeros before the first chunk, as the non-streaming left padding with pad_mode "constant");
- ConvTranspose1d (the latent upsample and the SEANet upsamplers): overlap-add. Each chunk's
  last `kernel - stride` outputs also depend on the next input, so they are held back (less
  the bias, which the next chunk adds again) and added to the start of the next chunk's output;
- the decoder transformer: a KV cache carried across frames, positions continuing;
- ELU is pointwise and needs nothing; resnet blocks add their (stateless) skip path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import MimiModel


class TorchMimiCodec:
    def __init__(self, mimi: MimiModel, codebooks: int):
        from transformers.models.mimi.modeling_mimi import MimiConv1d, MimiConvTranspose1d, MimiEuclideanCodebook, \
            MimiResnetBlock

        self._conv1d, self._convtr, self._resnet = MimiConv1d, MimiConvTranspose1d, MimiResnetBlock
        for module in mimi.modules():
            if isinstance(module, MimiEuclideanCodebook):
                # transformers caches each codebook table on first use and never refreshes it: a
                # model cast or moved since (e.g. to bfloat16 / cuda) would decode with a stale one.
                module._embed = None
        self.mimi = mimi
        self.codebooks = codebooks
        self.bins = int(mimi.config.codebook_size)
        self._check_streamable()
        self.reset()

    def _check_streamable(self) -> None:
        """Fail at construction, not mid-utterance, on a decoder this class cannot stream."""
        decoder = self.mimi.decoder
        for conv in (m for m in decoder.modules() if isinstance(m, self._conv1d)):
            # Stride-1 causal convs only (all of Mimi's decoder): no frame-alignment bookkeeping.
            if not conv.causal or conv.conv.stride[0] != 1:
                raise ValueError("streaming decode needs causal stride-1 convolutions in Mimi's decoder")
            if conv.pad_mode not in ("constant", "replicate"):
                raise ValueError(f"streaming decode does not support pad_mode {conv.pad_mode!r}")
        for convtr in (m for m in decoder.modules() if isinstance(m, self._convtr)):
            # Overlap-add emits outputs from the left; trim_right_ratio < 1 would trim on the left.
            if convtr.padding_left != 0:
                raise ValueError("streaming decode needs causal transposed convolutions (trim_right_ratio 1)")

    @property
    def device(self) -> torch.device:
        return next(self.mimi.parameters()).device

    def reset(self) -> None:
        """Forget the previous utterance (conv state and transformer KV cache)."""
        from transformers import DynamicCache

        self._context: dict[nn.Module, torch.Tensor] = {}  # MimiConv1d -> its last inputs
        self._tails: dict[nn.Module, torch.Tensor] = {}  # MimiConvTranspose1d -> held-back outputs
        # config=: Mimi's attention is a 250-position sliding window, so the cache keeps only
        # that much (bounded memory on long streams) while positions keep counting.
        self._cache = DynamicCache(config=self.mimi.decoder.decoder_transformer.config)

    def decode_frame(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [1, codebooks] -> 1920 float32 samples (on the model's device)."""
        decoder = self.mimi.decoder
        with torch.inference_mode():
            codes = codes.to(device=self.device, dtype=torch.long).reshape(1, -1, 1)
            latents = self.mimi.quantizer.decode(codes)  # [1, hidden, 1]
            if decoder.upsample is not None:
                latents = self._step_convtr(decoder.upsample, latents)  # 12.5 Hz -> 25 Hz
            hidden = decoder.decoder_transformer(
                latents.transpose(1, 2), cache=self._cache, use_cache=True
            ).last_hidden_state.transpose(1, 2)
            for layer in decoder.decoder_seanet.layers:
                hidden = self._step(layer, hidden)
            return hidden.reshape(-1).to(torch.float32)

    def _step(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One chunk through one SEANet decoder layer, with that layer's streaming state."""
        if isinstance(module, self._conv1d):
            return self._step_conv(module, x)
        if isinstance(module, self._convtr):
            return self._step_convtr(module, x)
        if isinstance(module, self._resnet):
            residual = x
            for layer in module.block:
                x = self._step(layer, x)
            return self._step(module.shortcut, residual) + x
        if isinstance(module, (nn.ELU, nn.Identity)):
            return module(x)
        raise TypeError(f"no streaming rule for {type(module).__name__} in Mimi's decoder")

    def _step_conv(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        pad = int(module.padding_total)
        context = self._context.get(module)
        if context is None:
            # What the whole-sequence decode pads the left of the sequence with.
            if module.pad_mode == "constant":
                context = x.new_zeros(x.shape[0], x.shape[1], pad)
            else:
                context = x[..., :1].expand(-1, -1, pad)
        x = torch.cat([context, x], dim=-1)
        self._context[module] = x[..., x.shape[-1] - pad:]
        return module.conv(x)

    def _step_convtr(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        conv = module.conv
        y = conv(x)  # (L - 1) * stride + kernel samples
        tail = self._tails.get(module)
        if tail is not None:
            y = torch.cat([y[..., : tail.shape[-1]] + tail, y[..., tail.shape[-1]:]], dim=-1)
        # The last kernel - stride samples still await the next chunk's contributions.
        ready = y.shape[-1] - (conv.kernel_size[0] - conv.stride[0])
        held = y[..., ready:]
        if conv.bias is not None:
            held = held - conv.bias[None, :, None]  # the next chunk's output carries it already
        self._tails[module] = held
        return y[..., :ready]

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """float32 mono 24 kHz -> codes [codebooks, frames] int32."""
        dtype = next(self.mimi.parameters()).dtype
        with torch.inference_mode():
            values = torch.as_tensor(np.asarray(audio, dtype=np.float32), device=self.device)
            codes = self.mimi.encode(values.to(dtype)[None, None, :], num_quantizers=self.codebooks).audio_codes
        return codes[0].cpu().numpy().astype(np.int32)
