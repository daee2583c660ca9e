"""Random-weight CSM + Mimi models: demos, benchmarks and the tests' tiny model.

Three flavors share the real classes (mlx-audio's SesameModel and Mimi):
  tiny  - ~1 M parameters, float32: tests run the real loop in tens of milliseconds
  small - ~30 M parameters (mostly the 2051-id audio embeddings and heads), a narrow
          backbone, a small depth decoder and a small Mimi, float32: a bench that finishes
          in minutes on a 2-core CPU
  full  - the real CSM-1B shapes (Llama-3.2-1B backbone, 100M decoder, full Mimi) in
          bfloat16: same bytes per frame as the real model, for speed and memory figures

Default initialisation is nearly silent (audio_head and Mimi codebooks start at zero, Mimi
convs are scaled 1/fan_in), so the builders randomise those to produce audible noise.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

FLAVORS = ("tiny", "small", "full")
SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920  # 80 ms at 24 kHz

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

# Trains the local tokenizer: a byte-level BPE never fails on unseen text.
_CORPUS = [
    "Hello there, how are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "Sesame speaks with a conversational voice, and it streams frame by frame.",
    "like a super Mario level. Like it's very like high detail.",
    "I'd be like okay I'm gonna start revising now and then like you're revising for ages.",
    "Numbers like 1, 2, 3 and 2048 are fine; so are questions! And quotes: \"yes\".",
]


def csm_config(flavor: str, text_vocab_size: int | None = None) -> dict:
    """The dict `SesameModel(config)` is built from, for a flavor."""
    _check(flavor)
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

    _check(flavor)
    real = mimi_202407(32)
    if flavor == "full":
        return real
    dim, filters, layers, heads, ff, qdim, bins = _MIMIS[flavor]
    seanet = dataclasses.replace(real.seanet, dimension=dim, nfilters=filters)
    transformer = dataclasses.replace(
        real.transformer, d_model=dim, num_heads=heads, num_layers=layers, dim_feedforward=ff
    )
    return MimiConfig(
        channels=1, sample_rate=24000, frame_rate=12.5, renormalize=True, seanet=seanet,
        transformer=transformer, quantizer_nq=32, quantizer_bins=bins, quantizer_dim=qdim,
    )


def mimi_config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def mimi_config_from_dict(data: dict):
    from mlx_audio.codec.models.mimi.mimi import MimiConfig
    from mlx_audio.codec.models.mimi.modules import SeanetConfig, TransformerConfig

    data = copy.deepcopy(data)
    data["seanet"] = SeanetConfig(**data["seanet"])
    data["transformer"] = TransformerConfig(**data["transformer"])
    return MimiConfig(**data)


def dtype_for(flavor: str):
    import mlx.core as mx

    return getattr(mx, _DTYPES[flavor])


def build_csm(config: dict, dtype=None, seed: int = 0):
    """A SesameModel with random weights that produce varied (non-flat) logits."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_audio.tts.models.sesame.sesame import SesameModel

    mx.random.seed(seed)
    model = SesameModel(config)
    decoder_dim = model.audio_head.shape[1]
    # audio_head starts at zero (flat logits, every sample is random): give it a scale that
    # makes logits O(1).
    model.audio_head = mx.random.normal(model.audio_head.shape) * (decoder_dim ** -0.5)
    if dtype is not None:
        model.set_dtype(dtype)
    # Materialise layer by layer so full-size float32 temporaries never pile up.
    for _, value in tree_flatten(model.parameters()):
        mx.eval(value)
    return model


def build_mimi(cfg, dtype=None, seed: int = 0):
    """A Mimi codec with random codebooks and fan-in scaled convs: decodes to audible noise."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_audio.codec.models.mimi import Mimi
    from mlx_audio.codec.models.mimi.modules import ConvTranspose1d, EuclideanCodebook

    mx.random.seed(seed + 1)
    mimi = Mimi(cfg)
    updates = []
    for name, value in tree_flatten(mimi.parameters()):
        if name.endswith("embedding_sum"):
            updates.append((name, mx.random.normal(value.shape)))
        elif name.endswith("cluster_usage") or name.endswith("codebook.initialized"):
            updates.append((name, mx.ones(value.shape)))
        elif name.endswith(".weight") and value.ndim == 3:
            # conv (out, k, in): uniform with variance 1/fan_in keeps the signal level.
            fan_in = value.shape[1] * value.shape[2]
            bound = math.sqrt(3.0 / fan_in)
            updates.append((name, mx.random.uniform(-bound, bound, value.shape)))
    mimi.update(tree_unflatten(updates))
    if dtype is not None:
        mimi.set_dtype(dtype)

    def refresh(module, name, _):
        if isinstance(module, (EuclideanCodebook, ConvTranspose1d)) and name in ("initialized", "weight"):
            module.update_in_place()
        return True

    mimi.filter_and_map(refresh)
    mx.eval(mimi.parameters())
    nn.Module.eval(mimi)
    return mimi


def write_tokenizer(directory: Path, vocab_size: int = 512) -> Path:
    """Train a small byte-level BPE with Llama-3 style BOS/EOS and save it HF-style."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[bos, eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
        "model_max_length": 2048, "clean_up_tokenization_spaces": False,
    }))
    (directory / "special_tokens_map.json").write_text(json.dumps({"bos_token": bos, "eos_token": eos}))
    return directory


def random_voice_prompt(seconds: float, seed: int) -> np.ndarray:
    """A speech-like test signal (gliding harmonics with a syllable envelope), float32 24 kHz."""
    rng = np.random.default_rng(seed)
    frames = max(1, int(round(seconds * 12.5)))
    t = np.arange(frames * SAMPLES_PER_FRAME) / SAMPLE_RATE
    pitch = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.random() * 6.28)
    audio = 0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.shape)
    return audio.astype(np.float32)


VOICE_PROMPT_TEXT = {
    "conversational_a": "like revising for an exam I'd have to try and keep up the momentum",
    "conversational_b": "like a super Mario level. Like it's very like high detail.",
}


def write_model_dir(path: Path, flavor: str = "tiny", seed: int = 0) -> Path:
    """Write a complete offline model directory for MODEL_PATH.

    Layout (what `loading.py` reads):
      config.json, model.safetensors      the CSM model (SesameModel config + weights)
      tokenizer/tokenizer.json, tokenizer_config.json, special_tokens_map.json
      mimi/mimi_config.json, mimi/model.safetensors   Mimi in MLX layout
      prompts/<voice>.wav, prompts/<voice>.txt         built-in voice prompts
    """
    import mlx.core as mx
    import soundfile
    from mlx.utils import tree_flatten

    _check(flavor)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_tokenizer(path / "tokenizer")
    text_vocab = _tokenizer_vocab_size(path / "tokenizer")
    config = csm_config(flavor, text_vocab_size=text_vocab)
    (path / "config.json").write_text(json.dumps(config, indent=1))
    model = build_csm(config, dtype=dtype_for(flavor), seed=seed)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    mimi_cfg = mimi_config(flavor)
    mimi = build_mimi(mimi_cfg, seed=seed)
    (path / "mimi").mkdir(exist_ok=True)
    (path / "mimi" / "mimi_config.json").write_text(json.dumps(mimi_config_to_dict(mimi_cfg)))
    mx.save_safetensors(str(path / "mimi" / "model.safetensors"), dict(tree_flatten(mimi.parameters())))
    prompts = path / "prompts"
    prompts.mkdir(exist_ok=True)
    for index, (voice, text) in enumerate(VOICE_PROMPT_TEXT.items()):
        audio = random_voice_prompt(_PROMPT_SECONDS[flavor], seed=seed + index)
        soundfile.write(str(prompts / f"{voice}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
        (prompts / f"{voice}.txt").write_text(text)
    return path


def prompt_seconds(flavor: str) -> float:
    return _PROMPT_SECONDS[flavor]


def build_assets(flavor: str, quantize: str = "none"):
    """Everything the backend loads, built in-process: (CsmAssets, voice prompt locator).

    No download and no files kept: the tokenizer is trained into a temporary directory and
    loaded through the same `load_tokenizer` as real ones.
    """
    import tempfile

    from .loading import CsmAssets, load_tokenizer, quantize_model
    from .voice_prompts import PromptAudio

    _check(flavor)
    with tempfile.TemporaryDirectory(prefix="csm-random-tokenizer-") as tmp:
        write_tokenizer(Path(tmp))
        tokenizer = load_tokenizer(Path(tmp))
        text_vocab = _tokenizer_vocab_size(Path(tmp))
    config = csm_config(flavor, text_vocab_size=text_vocab)
    model = build_csm(config, dtype=dtype_for(flavor))
    if quantize not in ("none", "", None):
        quantize_model(model, int(quantize))
    mimi = build_mimi(mimi_config(flavor), dtype=dtype_for(flavor))
    seconds = _PROMPT_SECONDS[flavor]
    seeds = {voice: index for index, voice in enumerate(VOICE_PROMPT_TEXT)}

    def locate(voice_id: str) -> PromptAudio:
        text = VOICE_PROMPT_TEXT.get(voice_id, "")
        seed = seeds.get(voice_id, 0)
        return PromptAudio(f"random:{flavor}:{voice_id}", text, lambda: (random_voice_prompt(seconds, seed), text))

    return CsmAssets(model, config, tokenizer, mimi, f"random-weights:{flavor}", None), locate


def _tokenizer_vocab_size(directory: Path) -> int:
    data = json.loads((Path(directory) / "tokenizer.json").read_text())
    vocab = len(data["model"]["vocab"]) + len(data.get("added_tokens", []))
    return int(math.ceil(vocab / 64) * 64)


def _check(flavor: str) -> None:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown random-weights flavor {flavor!r}; choose one of {', '.join(FLAVORS)}")
