"""Random-weight CSM (and Mimi) on torch, the flavors of the MLX backend (tiny/small/full):
CI runs the real torch code on them and the bench measures full-size speed. transformers'
default init gives nearly flat logits from the codebook heads, so they are scaled as the
MLX builder scales its audio_head (logits of order one)."""

from __future__ import annotations

import logging

import torch

from .config import csm_hf_config, quiet_transformers

_DTYPES = {"tiny": torch.float32, "small": torch.float32, "full": torch.bfloat16}


def build_model(flavor: str, *, text_vocab_size: int | None = None, seed: int = 0, dtype: torch.dtype | None = None,
                device: str | torch.device = "cpu"):
    """A CsmForConditionalGeneration (its Mimi included) with random weights, in eval mode."""
    from transformers import CsmForConditionalGeneration

    torch.manual_seed(seed)
    with quiet_transformers():
        model = CsmForConditionalGeneration(csm_hf_config(flavor, text_vocab_size))
    with torch.no_grad():
        head = model.depth_decoder.codebooks_head.weight
        head.normal_(0.0, head.shape[1] ** -0.5)
        _audible_mimi(model.codec_model)
    logging.getLogger(__name__).debug("random %s CSM on torch: %d parameters", flavor, model.num_parameters())
    return model.to(device=device, dtype=dtype or _DTYPES[flavor]).eval()


def _audible_mimi(mimi) -> None:
    """Random codebooks and fan-in scaled convs (as the MLX builder does): default init
    decodes every code to near silence."""
    for name, value in mimi.named_parameters():
        if name.endswith(".weight") and value.ndim == 3:
            fan_in = value.shape[1] * value.shape[2]
            value.uniform_(-(3.0 / fan_in) ** 0.5, (3.0 / fan_in) ** 0.5)
    for name, value in mimi.named_buffers():
        if name.endswith("embed_sum"):
            value.normal_()
        elif name.endswith(("cluster_usage", "initialized")):
            value.fill_(1.0)
