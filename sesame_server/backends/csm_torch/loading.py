"""csm-torch's model: transformers' layout (CsmForConditionalGeneration with its Mimi, and
the tokenizer) from MODEL_PATH or TORCH_MODEL_ID on the hub (`sesame/csm-1b`, gated), or
random weights built in memory. Voice prompts come from the same places as the MLX
backend's (voice_prompts.py)."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from sesame_server.backends.base import BackendError
from sesame_server.backends.csm import hub
from sesame_server.backends.csm import loading as csm_loading
from sesame_server.backends.csm.loading import is_transformers_layout, load_tokenizer, tokenizer_source
from sesame_server.config import Settings

from .config import quiet_transformers

log = logging.getLogger(__name__)

# What a transformers-layout CSM repo needs (sesame/csm-1b also holds the original 6 GB
# ckpt.pt, which is not fetched).
TORCH_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


@dataclass
class TorchAssets:
    model: object  # transformers CsmForConditionalGeneration (its codec_model is Mimi)
    tokenizer: object
    model_id: str
    model_dir: Path | None  # where prompts/ may live


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (the checkpoint's own), float32 on a CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def model_dir(settings: Settings) -> Path:
    return csm_loading.model_dir(settings, settings.torch_model_id, TORCH_PATTERNS, "the CSM model (transformers)")


def load_assets(settings: Settings, device: torch.device) -> TorchAssets:
    from transformers import CsmForConditionalGeneration

    directory = model_dir(settings)
    try:
        with quiet_transformers():
            model = CsmForConditionalGeneration.from_pretrained(directory, dtype=pick_dtype(device))
    except (OSError, ValueError, KeyError) as exc:
        raise BackendError(f"{directory} is not a CSM model in transformers' layout ({exc}); an MLX-layout "
                           "directory converts with `sesame-tts convert`") from exc
    tokenizer = load_tokenizer(tokenizer_source(settings, directory), settings.hf_token)
    model_id = str(settings.model_path) if settings.model_path else settings.torch_model_id
    return TorchAssets(model.to(device).eval(), tokenizer, model_id, directory)


def random_assets(flavor: str, device: torch.device):
    """Random weights of a flavor, built in memory: (TorchAssets, voice prompt locator). The
    tokenizer and voice prompts are the MLX backend's random ones (same text, same audio)."""
    from sesame_server.backends.csm.random_weights import random_prompt_source, tokenizer_vocab_size, write_tokenizer

    from .random_weights import build_model

    with tempfile.TemporaryDirectory(prefix="csm-random-tokenizer-") as tmp:
        write_tokenizer(Path(tmp))
        tokenizer = load_tokenizer(Path(tmp))
        text_vocab = tokenizer_vocab_size(Path(tmp))
    model = build_model(flavor, text_vocab_size=text_vocab, device=device)
    return TorchAssets(model, tokenizer, f"random-weights:{flavor}", None), random_prompt_source(flavor)


def local_status(settings: Settings) -> tuple[bool, str]:
    """Whether csm-torch can load without the network."""
    if settings.model_path is not None:
        path = Path(settings.model_path)
        if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
            return False, f"MODEL_PATH {path} has no config.json + *.safetensors"
        if not is_transformers_layout(path):
            return False, (f"MODEL_PATH {path} is in the MLX layout: BACKEND=csm serves it "
                           "(`sesame-tts convert --to transformers` makes a copy for csm-torch)")
        return True, f"MODEL_PATH {path}"
    if not hub.cached_snapshot_has_weights(settings.torch_model_id):
        return False, f"{settings.torch_model_id} is not in the Hugging Face cache (run `sesame-tts download`)"
    return True, f"{settings.torch_model_id} (Hugging Face cache)"
