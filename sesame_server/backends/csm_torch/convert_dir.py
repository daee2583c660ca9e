"""`sesame-tts convert`: a whole model directory from one layout to the other.

  MLX layout (what the csm backend loads from MODEL_PATH):
    config.json + model.safetensors (mlx-audio names), tokenizer/, mimi/ (MLX Mimi) or
    MIMI_ID, prompts/
  transformers layout (what csm-torch loads; what `sesame/csm-1b` holds):
    config.json (CsmConfig, codec_config = Mimi) + model.safetensors (CSM and Mimi),
    tokenizer.json & co. at the top, prompts/

Weights go through convert.py (CSM) and mimi_convert.py (Mimi); the result is written to a
temporary directory beside the target and renamed into place, so a failed conversion never
leaves a half-written model behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from sesame_server.backends.base import BackendError
from sesame_server.config import Settings

from .config import quiet_transformers

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def to_transformers(source: Path, target: Path, settings: Settings) -> Path:
    """An MLX-layout directory -> transformers' layout (Mimi from source/mimi or MIMI_ID)."""
    import torch

    from sesame_server.backends.csm.loading import load_csm, load_mimi, mimi_source, tokenizer_source

    from .convert import hf_model_from_mlx
    from .mimi_convert import hf_mimi_from_mlx

    source = Path(source)
    mlx_model, config = load_csm(source)
    with quiet_transformers():
        model = hf_model_from_mlx(mlx_model, config)
    mimi = hf_mimi_from_mlx(load_mimi(mimi_source(settings, source), settings.hf_token), model.config.codec_config)
    model.codec_model.load_state_dict(mimi.state_dict())
    if config.get("torch_dtype") == "bfloat16":
        model = model.to(torch.bfloat16)  # the checkpoint's own precision: half the size on disk

    def write(staging: Path) -> None:
        with quiet_transformers():
            model.save_pretrained(staging)
        _copy_tokenizer(Path(tokenizer_source(settings, source)), staging, settings)
        _copy_prompts(source, staging)
    return _atomically(target, write)


def to_mlx(source: Path, target: Path) -> Path:
    """A transformers-layout directory -> the MLX layout (CSM, tokenizer/, mimi/, prompts/)."""
    import mlx.core as mx
    import torch
    from transformers import CsmForConditionalGeneration

    from sesame_server.backends.csm.mimi_io import CONFIG_FILE, WEIGHTS_FILE, mimi_config_to_dict

    from .convert import hf_to_mlx
    from .mimi_convert import hf_to_mlx as mimi_hf_to_mlx

    source = Path(source)
    try:
        with quiet_transformers():
            model = CsmForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise BackendError(f"{source} is not a CSM model in transformers' layout ({exc})") from exc
    hf = model.config
    dtype = mx.bfloat16 if str(hf.dtype).removeprefix("torch.") == "bfloat16" else mx.float32
    csm = {name: mx.array(value.float().numpy()).astype(dtype) for name, value in
           hf_to_mlx(model.state_dict(), hf).items()}
    mimi_state = {name.removeprefix("codec_model."): value for name, value in model.state_dict().items()
                  if name.startswith("codec_model.")}
    mimi = {name: mx.array(value.float().numpy()) for name, value in
            mimi_hf_to_mlx(mimi_state, hf.codec_config).items()}
    mlx_mimi_config = mlx_mimi_config_for(hf.codec_config)

    def write(staging: Path) -> None:
        (staging / "config.json").write_text(json.dumps(mlx_config(hf), indent=1))
        mx.save_safetensors(str(staging / "model.safetensors"), csm)
        (staging / "mimi").mkdir()
        (staging / "mimi" / CONFIG_FILE).write_text(json.dumps(mimi_config_to_dict(mlx_mimi_config)))
        mx.save_safetensors(str(staging / "mimi" / WEIGHTS_FILE), mimi)
        (staging / "tokenizer").mkdir()
        for name in _TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, staging / "tokenizer" / name)
        _copy_prompts(source, staging)
    return _atomically(target, write)


def mlx_config(hf) -> dict:
    """mlx-audio's SesameModel config (its ModelArgs fields) from transformers' CsmConfig."""
    def llama(part) -> dict:
        rope = dict(part.rope_parameters)
        theta = rope.pop("rope_theta")
        return {"attention_bias": part.attention_bias, "attention_dropout": part.attention_dropout,
                "head_dim": part.head_dim, "hidden_act": part.hidden_act, "hidden_size": part.hidden_size,
                "initializer_range": part.initializer_range, "intermediate_size": part.intermediate_size,
                "max_position_embeddings": part.max_position_embeddings, "mlp_bias": part.mlp_bias,
                "num_attention_heads": part.num_attention_heads, "num_hidden_layers": part.num_hidden_layers,
                "num_key_value_heads": part.num_key_value_heads, "rms_norm_eps": part.rms_norm_eps,
                "rope_scaling": rope, "rope_theta": theta, "use_cache": True}

    depth = hf.depth_decoder_config
    return {
        "model_type": "csm", "backbone_flavor": "llama-1B", "decoder_flavor": "llama-100M",
        **llama(hf), "text_vocab_size": hf.text_vocab_size, "audio_vocab_size": hf.vocab_size,
        "audio_num_codebooks": hf.num_codebooks, "num_codebooks": hf.num_codebooks, "vocab_size": hf.vocab_size,
        "bos_token_id": hf.bos_token_id, "pad_token_id": hf.pad_token_id, "audio_token_id": hf.audio_token_id,
        "audio_eos_token_id": hf.audio_eos_token_id, "codebook_eos_token_id": hf.codebook_eos_token_id,
        "codebook_pad_token_id": hf.codebook_pad_token_id, "tie_codebooks_embeddings": True,
        "tie_word_embeddings": False,
        "depth_decoder_config": {**llama(depth), "model_type": "csm_depth_decoder_model",
                                 "backbone_hidden_size": depth.backbone_hidden_size,
                                 "num_codebooks": depth.num_codebooks, "vocab_size": depth.vocab_size},
    }


def mlx_mimi_config_for(hf_mimi):
    """mlx-audio's MimiConfig of the same shape as a transformers MimiConfig."""
    import dataclasses

    from mlx_audio.codec.models.mimi.mimi import MimiConfig, mimi_202407

    real = mimi_202407(hf_mimi.num_quantizers)
    seanet = dataclasses.replace(real.seanet, dimension=hf_mimi.hidden_size, nfilters=hf_mimi.num_filters)
    transformer = dataclasses.replace(real.transformer, d_model=hf_mimi.hidden_size,
                                      num_heads=hf_mimi.num_attention_heads, num_layers=hf_mimi.num_hidden_layers,
                                      dim_feedforward=hf_mimi.intermediate_size)
    return MimiConfig(channels=1, sample_rate=hf_mimi.sampling_rate, frame_rate=real.frame_rate, renormalize=True,
                      seanet=seanet, transformer=transformer, quantizer_nq=hf_mimi.num_quantizers,
                      quantizer_bins=hf_mimi.codebook_size, quantizer_dim=hf_mimi.vector_quantization_hidden_dimension)


def _copy_tokenizer(source: Path, staging: Path, settings: Settings) -> None:
    if not source.expanduser().exists():  # a hub id (TOKENIZER_ID): fetch it
        from sesame_server.backends.csm import hub

        source = hub.snapshot(str(source), hub.TOKENIZER_PATTERNS, settings.hf_token, "the Llama-3.2 tokenizer",
                              required=("tokenizer*.json",))
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)


def _copy_prompts(source: Path, staging: Path) -> None:
    if (source / "prompts").is_dir():
        shutil.copytree(source / "prompts", staging / "prompts")


def _atomically(target: Path, write) -> Path:
    target = Path(target).expanduser()
    if target.exists():
        raise BackendError(f"{target} already exists: convert into a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
