"""The shapes of the random-weight models: CSM and Mimi configs for tiny, small and full.

  tiny  - ~1 M parameters, float32: tests run the real loop in tens of milliseconds
  small - ~30 M parameters (mostly the 2051-id audio embeddings and heads), a narrow
          backbone, a small depth decoder and a small Mimi, float32: a bench that finishes
          in minutes on a 2-core CPU
  full  - the real CSM-1B shapes (Llama-3.2-1B backbone, 100M decoder, full Mimi) in
          bfloat16: same bytes per frame as the real model, for speed and memory figures

random_weights.py builds models from these.
"""

from __future__ import annotations

import dataclasses

from sesame_server.audio.units import SAMPLE_RATE

FLAVORS = ("tiny", "small", "full")

_ROPE_SCALING = {
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}

# (layers, hidden, heads, kv_heads, head_dim, intermediate)
_BACKBONES = {
    "tiny": (2, 128, 4, 2, 32, 256),
    "small": (4, 256, 4, 2, 64, 1024),
    "full": (16, 2048, 32, 8, 64, 8192),  # llama-1B
}
_DECODERS = {
    "tiny": (2, 64, 4, 2, 16, 128),
    "small": (2, 128, 4, 2, 32, 256),
    "full": (4, 1024, 8, 2, 128, 8192),  # llama-100M
}
# Mimi: (seanet dimension, filters, transformer layers, heads, feedforward, quantizer dim, bins)
_MIMIS = {
    "tiny": (32, 4, 1, 2, 64, 16, 64),
    "small": (64, 8, 2, 4, 256, 32, 2048),
}
_DTYPES = {"tiny": "float32", "small": "float32", "full": "bfloat16"}
_PROMPT_SECONDS = {"tiny": 1.0, "small": 2.0, "full": 2.0}

def csm_config(flavor: str, text_vocab_size: int | None = None) -> dict:
    """The dict `SesameModel(config)` is built from, for a flavor."""
    check_flavor(flavor)
    b_layers, b_dim, b_heads, b_kv, b_head, b_ff = _BACKBONES[flavor]
    d_layers, d_dim, d_heads, d_kv, d_head, d_ff = _DECODERS[flavor]
    bins = 2048 if flavor == "full" else _MIMIS[flavor][6]
    audio_vocab = bins + 3  # the real model: 2051 ids for 2048 Mimi bins
    if text_vocab_size is None or flavor == "full":
        text_vocab_size = 128_256 if flavor == "full" else 512
    codebooks = 32
    return {
        "model_type": "csm",
        "random_weights": flavor,
        "backbone_flavor": "llama-1B" if flavor == "full" else f"random-{flavor}",
        "decoder_flavor": "llama-100M" if flavor == "full" else f"random-{flavor}",
        "text_vocab_size": int(text_vocab_size),
        "audio_vocab_size": audio_vocab,
        "audio_num_codebooks": codebooks,
        "num_codebooks": codebooks,
        "vocab_size": audio_vocab,
        "hidden_size": b_dim,
        "num_hidden_layers": b_layers,
        "num_attention_heads": b_heads,
        "num_key_value_heads": b_kv,
        "head_dim": b_head,
        "intermediate_size": b_ff,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500_000,
        "rope_scaling": dict(_ROPE_SCALING),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "tie_codebooks_embeddings": True,
        "use_cache": True,
        "bos_token_id": 128000,
        "pad_token_id": 128002,
        "audio_token_id": 128002,
        "audio_eos_token_id": 128003,
        "codebook_eos_token_id": 0,
        "codebook_pad_token_id": audio_vocab - 1,
        "mimi_codebook_size": bins,
        "torch_dtype": _DTYPES[flavor],
        "depth_decoder_config": {
            "model_type": "csm_depth_decoder_model",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "backbone_hidden_size": b_dim,
            "head_dim": d_head,
            "hidden_act": "silu",
            "hidden_size": d_dim,
            "initializer_range": 0.02,
            "intermediate_size": d_ff,
            "max_position_embeddings": codebooks + 1,
            "mlp_bias": False,
            "num_attention_heads": d_heads,
            "num_codebooks": codebooks,
            "num_hidden_layers": d_layers,
            "num_key_value_heads": d_kv,
            "rms_norm_eps": 1e-5,
            "rope_scaling": dict(_ROPE_SCALING),
            "rope_theta": 500_000,
            "use_cache": True,
            "vocab_size": audio_vocab,
        },
    }


def mimi_config(flavor: str):
    """A MimiConfig: the real `mimi_202407(32)` for full, scaled-down otherwise."""
    from mlx_audio.codec.models.mimi.mimi import MimiConfig, mimi_202407

    check_flavor(flavor)
    real = mimi_202407(32)
    if flavor == "full":
        return real
    dim, filters, layers, heads, ff, qdim, bins = _MIMIS[flavor]
    seanet = dataclasses.replace(real.seanet, dimension=dim, nfilters=filters)
    transformer = dataclasses.replace(
        real.transformer, d_model=dim, num_heads=heads, num_layers=layers, dim_feedforward=ff
    )
    return MimiConfig(
        channels=1, sample_rate=SAMPLE_RATE, frame_rate=12.5, renormalize=True, seanet=seanet,
        transformer=transformer, quantizer_nq=32, quantizer_bins=bins, quantizer_dim=qdim,
    )


def dtype_name(flavor: str) -> str:
    return _DTYPES[flavor]


def prompt_seconds(flavor: str) -> float:
    """Length of the random voice prompts (their Mimi codes are part of every request)."""
    return _PROMPT_SECONDS[flavor]


def check_flavor(flavor: str) -> None:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown random-weights flavor {flavor!r}; choose one of {', '.join(FLAVORS)}")
