"""transformers' configs for CSM and Mimi: the real csm-1b shapes, or a random-weights flavor.

The flavors are the MLX backend's (backends/csm/random_config.py), so tiny/small/full mean
the same model on both; transformers' CsmConfig takes that dict as it is, with Mimi's
shape spelled in transformers' words.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from sesame_server.backends.csm.random_config import _MIMIS, check_flavor, csm_config

# Keys of the MLX flavor dict that are not CsmConfig's.
_MLX_ONLY = ("model_type", "random_weights", "backbone_flavor", "decoder_flavor")


def mimi_config(flavor: str):
    """A transformers MimiConfig: the real Mimi for full, the MLX flavor's shape otherwise."""
    from transformers import MimiConfig

    check_flavor(flavor)
    if flavor == "full":
        return MimiConfig(num_quantizers=32)
    dim, filters, layers, heads, ff, qdim, bins = _MIMIS[flavor]
    return MimiConfig(
        hidden_size=dim, num_filters=filters, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, head_dim=dim // heads, intermediate_size=ff, codebook_size=bins,
        codebook_dim=qdim, vector_quantization_hidden_dimension=qdim, upsample_groups=dim, num_quantizers=32,
    )


def csm_hf_config(flavor: str, text_vocab_size: int | None = None):
    """A transformers CsmConfig for a flavor, its codec config included."""
    from transformers import CsmConfig

    values = {key: value for key, value in csm_config(flavor, text_vocab_size).items() if key not in _MLX_ONLY}
    with quiet_transformers():
        return CsmConfig(**values, codec_config=mimi_config(flavor).to_dict())


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No warnings or progress bars from transformers while loading: the real checkpoint's
    own config warns about its token ids and RoPE fields, which are as Sesame made them."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def csm_hf_config_for(mlx_config: dict):
    """The transformers config of a model given its MLX config.json: a random-weights flavor
    carries its shapes; the real csm-1b is transformers' default CsmConfig."""
    flavor = mlx_config.get("random_weights") or "full"
    return csm_hf_config(flavor, mlx_config.get("text_vocab_size"))
