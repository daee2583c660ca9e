"""Writes a complete offline CSM model directory (random weights) for MODEL_PATH.

Test fixtures only: the product builds random models in memory (random_weights.py); the
tests want them on disk so the real loading code (loading.py) reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

from sesame_server.audio.units import SAMPLE_RATE
from sesame_server.backends.csm.mimi_io import CONFIG_FILE, WEIGHTS_FILE, mimi_config_to_dict
from sesame_server.backends.csm.random_config import check_flavor, csm_config, mimi_config, prompt_seconds
from sesame_server.backends.csm.random_weights import (
    VOICE_PROMPT_TEXT, build_csm, build_mimi, dtype_for, random_voice_prompt, tokenizer_vocab_size, write_tokenizer,
)


def write_model_dir(path: Path, flavor: str = "tiny", seed: int = 0) -> Path:
    """Layout (what `loading.py` reads):
      config.json, model.safetensors      the CSM model (SesameModel config + weights)
      tokenizer/tokenizer.json, tokenizer_config.json, special_tokens_map.json
      mimi/mimi_config.json, mimi/model.safetensors   Mimi in MLX layout
      prompts/<voice>.wav, prompts/<voice>.txt         built-in voice prompts
    """
    import mlx.core as mx
    import soundfile
    from mlx.utils import tree_flatten

    check_flavor(flavor)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_tokenizer(path / "tokenizer")
    config = csm_config(flavor, text_vocab_size=tokenizer_vocab_size(path / "tokenizer"))
    (path / "config.json").write_text(json.dumps(config, indent=1))
    model = build_csm(config, dtype=dtype_for(flavor), seed=seed)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    mimi_cfg = mimi_config(flavor)
    mimi = build_mimi(mimi_cfg, seed=seed)
    (path / "mimi").mkdir(exist_ok=True)
    (path / "mimi" / CONFIG_FILE).write_text(json.dumps(mimi_config_to_dict(mimi_cfg)))
    mx.save_safetensors(str(path / "mimi" / WEIGHTS_FILE), dict(tree_flatten(mimi.parameters())))
    prompts = path / "prompts"
    prompts.mkdir(exist_ok=True)
    for index, (voice, text) in enumerate(VOICE_PROMPT_TEXT.items()):
        audio = random_voice_prompt(prompt_seconds(flavor), seed=seed + index)
        soundfile.write(str(prompts / f"{voice}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
        (prompts / f"{voice}.txt").write_text(text)
    return path
