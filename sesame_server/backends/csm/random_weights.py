"""Random-weight CSM + Mimi models built in memory: `--random-weights` serving and the bench.

The shapes live in random_config.py; the real classes (mlx-audio's SesameModel and Mimi)
are used. Default initialisation is nearly silent (audio_head and Mimi codebooks start at
zero, Mimi convs are scaled 1/fan_in), so the builders randomise those to produce audible
noise. The tokenizer is trained into a temporary directory; nothing is downloaded or kept.
(The tests write the same models to disk as an offline MODEL_PATH: tests/csm_fixtures.py.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sesame_server.audio.units import FRAME_SECONDS, SAMPLE_RATE

from .mimi_io import refresh_derived
from .random_config import check_flavor, csm_config, dtype_name, mimi_config, prompt_seconds

RANDOM_WEIGHTS_WARNING = (
    "CSM IS RUNNING ON RANDOM WEIGHTS (flavor %s): every voice is NOISE, not speech. "
    "This mode is for demos, tooling and benchmarks only."
)

# Trains the local tokenizer: a byte-level BPE never fails on unseen text.
_CORPUS = [
    "Hello there, how are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "Sesame speaks with a conversational voice, and it streams frame by frame.",
    "like a super Mario level. Like it's very like high detail.",
    "I'd be like okay I'm gonna start revising now and then like you're revising for ages.",
    "Numbers like 1, 2, 3 and 2048 are fine; so are questions! And quotes: \"yes\".",
]

# Transcripts of the random voice prompts: short, so a tiny model's window has room.
VOICE_PROMPT_TEXT = {
    "conversational_a": "like revising for an exam I'd have to try and keep up the momentum",
    "conversational_b": "like a super Mario level. Like it's very like high detail.",
}


def dtype_for(flavor: str):
    import mlx.core as mx

    return {"float32": mx.float32, "bfloat16": mx.bfloat16}[dtype_name(flavor)]


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

    refresh_derived(mimi)
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
    frames = max(1, int(round(seconds / FRAME_SECONDS)))
    t = np.arange(frames * round(SAMPLE_RATE * FRAME_SECONDS)) / SAMPLE_RATE
    pitch = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.random() * 6.28)
    audio = 0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.shape)
    return audio.astype(np.float32)


def build_assets(flavor: str, quantize: str = "none"):
    """Everything the backend loads, built in-process: (CsmAssets, voice prompt locator).

    No download and no files kept: the tokenizer is trained into a temporary directory and
    loaded through the same `load_tokenizer` as real ones.
    """
    import tempfile

    from .loading import CsmAssets, load_tokenizer, quantize_model

    check_flavor(flavor)
    with tempfile.TemporaryDirectory(prefix="csm-random-tokenizer-") as tmp:
        write_tokenizer(Path(tmp))
        tokenizer = load_tokenizer(Path(tmp))
        text_vocab = tokenizer_vocab_size(Path(tmp))
    config = csm_config(flavor, text_vocab_size=text_vocab)
    model = build_csm(config, dtype=dtype_for(flavor))
    if quantize not in ("none", "", None):
        quantize_model(model, int(quantize))
    mimi = build_mimi(mimi_config(flavor), dtype=dtype_for(flavor))
    return CsmAssets(model, config, tokenizer, mimi, f"random-weights:{flavor}", None), random_prompt_source(flavor)


def random_prompt_source(flavor: str):
    """The random voices' prompts (speech-like test signals with short transcripts)."""
    from .voice_prompts import PromptAudio

    seconds = prompt_seconds(flavor)
    seeds = {voice: index for index, voice in enumerate(VOICE_PROMPT_TEXT)}

    def locate(voice_id: str) -> PromptAudio:
        text = VOICE_PROMPT_TEXT.get(voice_id, "")
        seed = seeds.get(voice_id, 0)
        return PromptAudio(f"random:{flavor}:{voice_id}", text, lambda: (random_voice_prompt(seconds, seed), text))

    return locate


def tokenizer_vocab_size(directory: Path) -> int:
    """The text vocabulary size CSM is built with: the tokenizer's, rounded up to 64."""
    data = json.loads((Path(directory) / "tokenizer.json").read_text())
    vocab = len(data["model"]["vocab"]) + len(data.get("added_tokens", []))
    return int(math.ceil(vocab / 64) * 64)
