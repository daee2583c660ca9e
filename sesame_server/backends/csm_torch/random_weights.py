"""Random-weight CSM (and Mimi) on torch, the flavors of the MLX backend (tiny/small/full):
CI runs the real torch code on them and the bench measures full-size speed. transformers'
default init gives nearly flat logits from the codebook heads, so they are scaled as the
MLX builder scales its audio_head (logits of order one)."""

from __future__ import annotations

import logging

import torch

from .config import csm_hf_config

_DTYPES = {"tiny": torch.float32, "small": torch.float32, "full": torch.bfloat16}


def build_model(flavor: str, *, text_vocab_size: int | None = None, seed: int = 0, dtype: torch.dtype | None = None,
                device: str | torch.device = "cpu"):
    """A CsmForConditionalGeneration (its Mimi included) with random weights, in eval mode."""
    from transformers import CsmForConditionalGeneration

    torch.manual_seed(seed)
    model = CsmForConditionalGeneration(csm_hf_config(flavor, text_vocab_size))
    with torch.no_grad():
        head = model.depth_decoder.codebooks_head.weight
        head.normal_(0.0, head.shape[1] ** -0.5)
    logging.getLogger(__name__).debug("random %s CSM on torch: %d parameters", flavor, model.num_parameters())
    return model.to(device=device, dtype=dtype or _DTYPES[flavor]).eval()
