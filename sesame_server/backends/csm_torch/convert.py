"""CSM weights between the MLX layout (mlx-audio's SesameModel) and transformers' layout
(CsmForConditionalGeneration, what `sesame/csm-1b` holds), both ways.

Two differences besides names: transformers applies RoPE to the two halves of each head
(`rotate_half`) where the original model and MLX rotate interleaved pairs, so the rows of
every q_proj and k_proj are permuted per head (as transformers' own conversion script
does); and transformers stores the shared audio embeddings twice (backbone and depth
decoder, tied).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from torch import Tensor

# MLX name pattern -> transformers name (first match wins).
_MLX_TO_HF = (
    (r"^backbone\.layers\.", "backbone_model.layers."),
    (r"^backbone\.norm\.", "backbone_model.norm."),
    (r"^decoder\.layers\.", "depth_decoder.model.layers."),
    (r"^decoder\.norm\.", "depth_decoder.model.norm."),
    (r"^text_embeddings\.weight$", "embed_text_tokens.weight"),
    (r"^audio_embeddings\.weight$", "backbone_model.embed_tokens.embed_audio_tokens.weight"),
    (r"^projection\.weight$", "depth_decoder.model.inputs_embeds_projector.weight"),
    (r"^codebook0_head\.weight$", "lm_head.weight"),
    (r"^audio_head$", "depth_decoder.codebooks_head.weight"),
)
_TIED_DEPTH_EMBEDDINGS = "depth_decoder.model.embed_tokens.weight"


def _heads(name: str, config) -> int | None:
    """Heads a q/k projection's rows are grouped in (None: not a q/k projection)."""
    part = config.depth_decoder_config if "depth_decoder" in name else config
    if name.endswith("self_attn.q_proj.weight"):
        return int(part.num_attention_heads)
    if name.endswith("self_attn.k_proj.weight"):
        return int(part.num_key_value_heads)
    return None


def interleaved_to_halves(weight: Tensor, heads: int) -> Tensor:
    """Rows of a q/k projection for interleaved RoPE -> for rotate-half RoPE."""
    rows, cols = weight.shape
    return weight.reshape(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def halves_to_interleaved(weight: Tensor, heads: int) -> Tensor:
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def mlx_to_hf(weights: Mapping[str, Tensor], config) -> dict[str, Tensor]:
    """MLX-layout CSM weights (mlx-audio names) -> transformers' state dict (config: CsmConfig)."""
    out = {}
    for name, value in weights.items():
        for pattern, replacement in _MLX_TO_HF:
            if re.search(pattern, name):
                name = re.sub(pattern, replacement, name)
                break
        else:
            raise KeyError(f"not a CSM weight in the MLX layout: {name}")
        heads = _heads(name, config)
        out[name] = value if heads is None else interleaved_to_halves(value, heads)
    out[_TIED_DEPTH_EMBEDDINGS] = out["backbone_model.embed_tokens.embed_audio_tokens.weight"]
    return out


def hf_to_mlx(weights: Mapping[str, Tensor], config) -> dict[str, Tensor]:
    """transformers' CSM state dict -> MLX-layout weights (the codec's weights are left out)."""
    reverse = [(replacement, pattern.strip("^$").replace("\\.", ".")) for pattern, replacement in _MLX_TO_HF]
    out = {}
    for name, value in weights.items():
        if name.startswith("codec_model.") or name == _TIED_DEPTH_EMBEDDINGS:
            continue
        heads = _heads(name, config)
        if heads is not None:
            value = halves_to_interleaved(value, heads)
        for prefix, mlx_name in reverse:
            if name.startswith(prefix):
                name = mlx_name + name[len(prefix):]
                break
        else:
            raise KeyError(f"not a CSM weight in transformers' layout: {name}")
        out[name] = value
    return out


def hf_model_from_mlx(mlx_model, mlx_config: dict, dtype=None):
    """A CsmForConditionalGeneration holding an MLX SesameModel's weights (its own Mimi random)."""
    import numpy as np
    import torch
    from mlx.utils import tree_flatten
    from transformers import CsmForConditionalGeneration

    from .config import csm_hf_config_for, quiet_transformers

    config = csm_hf_config_for(mlx_config)
    with quiet_transformers():
        model = CsmForConditionalGeneration(config)
    weights = {name: torch.from_numpy(np.array(value.astype(mlx_float32()))) for name, value in
               tree_flatten(mlx_model.parameters())}
    state = mlx_to_hf(weights, config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.startswith("codec_model.")]
    if missing or unexpected:
        raise KeyError(f"weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(dtype or torch.float32).eval()


def mlx_float32():
    import mlx.core as mx

    return mx.float32
