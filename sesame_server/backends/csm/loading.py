"""Load CSM, its text tokenizer and the Mimi codec from local directories or the hub.

Where each piece comes from (first match wins):
  CSM        MODEL_PATH (a directory with config.json + *.safetensors), else MODEL_ID on the hub
  tokenizer  <model dir>/tokenizer/, else <model dir> if it holds tokenizer.json,
             else TOKENIZER_ID (a local directory or a hub repo)
  Mimi       <model dir>/mimi/, else MIMI_ID (a local directory or .safetensors file, or a hub repo)

A Mimi directory either holds `mimi_config.json` + `model.safetensors` in MLX layout (see
mimi_io.py) or Kyutai's PyTorch checkpoint (tokenizer-e351c8d8-checkpoint125.safetensors,
converted by mlx-audio's loader). The tests' tiny models (tests/csm_fixtures.py) go through
exactly these functions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sesame_server.backends.base import BackendError
from sesame_server.config import Settings

from . import hub
from .mimi_io import is_mlx_mimi_dir, read_mlx_mimi

log = logging.getLogger(__name__)

QUANT_GROUP_SIZE = 64


@dataclass
class CsmAssets:
    model: object  # mlx_audio SesameModel
    config: dict
    tokenizer: object
    mimi: object  # mlx_audio Mimi
    model_id: str
    model_dir: Path | None  # where prompts/ may live


def model_dir(settings: Settings, repo_id: str | None = None, patterns: list[str] = hub.MODEL_PATTERNS,
              what: str = "the CSM model") -> Path:
    """MODEL_PATH, checked, else a snapshot of `repo_id` (default MODEL_ID) from the hub cache."""
    if settings.model_path is not None:
        path = Path(settings.model_path)
        if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
            raise BackendError(f"MODEL_PATH {path} must be a directory with config.json and *.safetensors")
        return path
    return hub.snapshot(repo_id or settings.model_id, patterns, settings.hf_token, what,
                        required=("config.json", "*.safetensors"))


def load_assets(settings: Settings) -> CsmAssets:
    directory = model_dir(settings)
    model, config = load_csm(directory, settings.quantize)
    tokenizer = load_tokenizer(tokenizer_source(settings, directory), settings.hf_token)
    mimi = load_mimi(mimi_source(settings, directory), settings.hf_token)
    model_id = str(settings.model_path) if settings.model_path else settings.model_id
    return CsmAssets(model, config, tokenizer, mimi, model_id, directory)


def load_csm(directory: Path, quantize: str = "none"):
    """SesameModel from `directory` (config.json + safetensors), optionally quantized."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_audio.tts.models.sesame.sesame import Model as SesameWrapper
    from mlx_audio.tts.models.sesame.sesame import SesameModel

    config = json.loads((directory / "config.json").read_text())
    weights = {}
    for path in sorted(directory.glob("*.safetensors")):
        weights.update(mx.load(str(path)))
    # mlx-audio's key mapping (original Sesame/torchtune names -> MLX); it prefixes "model.".
    weights = SesameWrapper.sanitize(None, weights)
    weights = {k.removeprefix("model."): v for k, v in weights.items()}
    model = SesameModel(config)
    stored = config.get("quantization")
    if stored:  # pre-quantized checkpoint (e.g. an -8bit repo)
        nn.quantize(
            model, group_size=stored["group_size"], bits=stored["bits"],
            class_predicate=lambda p, m: f"{p}.scales" in weights,
        )
    expected = {name for name, _ in tree_flatten(model.parameters())}
    missing = expected - set(weights)
    if missing:
        raise BackendError(f"{directory} is missing {len(missing)} CSM weights, e.g. {sorted(missing)[:3]}")
    extra = set(weights) - expected
    if extra:
        log.warning("Ignoring %d unexpected weights in %s (e.g. %s)", len(extra), directory, sorted(extra)[:3])
    model.load_weights([(k, v) for k, v in weights.items() if k in expected], strict=True)
    if quantize not in ("none", "", None) and not stored:
        quantize_model(model, int(quantize))
    mx.eval(model.parameters())
    model.eval()
    return model, config


def quantize_model(model, bits: int) -> None:
    """Quantize the backbone and depth decoder Linear layers in place (QUANTIZE=8|4)."""
    import mlx.nn as nn

    def eligible(path: str, module) -> bool:
        return (
            path.startswith(("backbone.", "decoder."))
            and isinstance(module, nn.Linear)
            and module.weight.shape[-1] % QUANT_GROUP_SIZE == 0
        )

    nn.quantize(model, group_size=QUANT_GROUP_SIZE, bits=bits, class_predicate=eligible)
    log.info("Quantized CSM backbone and decoder to %d bits", bits)


def tokenizer_source(settings: Settings, directory: Path | None) -> str | Path:
    if directory is not None:
        if (directory / "tokenizer").is_dir():
            return directory / "tokenizer"
        if (directory / "tokenizer.json").is_file():
            return directory
    return settings.tokenizer_id


def load_tokenizer(source: str | Path, token: str | None = None):
    """Llama-3 tokenizer with BOS/EOS added to every encode (as CSM was trained; what
    mlx-audio's load_llama3_tokenizer does, without importing MLX: csm-torch uses it too)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    path = Path(source).expanduser()
    if not path.exists():
        path = hub.snapshot(str(source), hub.TOKENIZER_PATTERNS, token, "the Llama-3.2 tokenizer",
                            required=("tokenizer*.json",))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0", pair=f"{bos}:0 $A:0 {eos}:0 {bos}:1 $B:1 {eos}:1",
        special_tokens=[(bos, tokenizer.bos_token_id), (eos, tokenizer.eos_token_id)],
    )
    return tokenizer


def mimi_source(settings: Settings, directory: Path | None) -> str | Path:
    if directory is not None and (directory / "mimi").is_dir():
        return directory / "mimi"
    return settings.mimi_id


def load_mimi(source: str | Path, token: str | None = None):
    """Mimi codec from an MLX-layout directory, a PyTorch checkpoint, or a hub repo."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_audio.codec.models.mimi import Mimi
    from mlx_audio.codec.models.mimi.mimi import mimi_202407

    path = Path(source).expanduser()
    if is_mlx_mimi_dir(path):
        mimi = read_mlx_mimi(path)
    else:
        if path.is_dir():
            checkpoint = path / hub.MIMI_FILENAME
            if not checkpoint.is_file():
                found = sorted(path.glob("*.safetensors"))
                if not found:
                    raise BackendError(f"no Mimi weights (*.safetensors) in {path}")
                checkpoint = found[0]
        elif path.is_file():
            checkpoint = path
        else:
            checkpoint = hub.file(str(source), hub.MIMI_FILENAME, token, "the Mimi codec")
        mimi = Mimi(mimi_202407(32))
        mimi.load_pytorch_weights(str(checkpoint), strict=True)
    mx.eval(mimi.parameters())
    nn.Module.eval(mimi)
    return mimi


def is_transformers_layout(path: Path) -> bool:
    """A model directory written for transformers (csm-torch): its config carries the codec's."""
    try:
        return "codec_config" in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False


def local_status(settings: Settings) -> tuple[bool, str]:
    """Whether CSM can load without the network (model, tokenizer, Mimi all local)."""
    if settings.model_path is not None:
        path = Path(settings.model_path)
        if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
            return False, f"MODEL_PATH {path} has no config.json + *.safetensors"
        if is_transformers_layout(path):
            return False, (f"MODEL_PATH {path} is in transformers' layout: BACKEND=csm-torch serves it "
                           "(`sesame-tts convert --to mlx` makes an MLX copy)")
        directory: Path | None = path
        where = f"MODEL_PATH {path}"
    else:
        if not hub.cached_snapshot_has_weights(settings.model_id):
            return False, f"{settings.model_id} is not in the Hugging Face cache (run `sesame-tts download`)"
        directory = None
        where = f"{settings.model_id} (Hugging Face cache)"
    missing = []
    tok = tokenizer_source(settings, directory)
    if not Path(tok).expanduser().exists() and not hub.cached(str(tok), "tokenizer.json") \
            and not hub.cached(str(tok), "tokenizer_config.json"):
        missing.append(f"tokenizer {tok}")
    mimi = mimi_source(settings, directory)
    if not Path(mimi).expanduser().exists() and not hub.cached(str(mimi), hub.MIMI_FILENAME):
        missing.append(f"Mimi {mimi}")
    if missing:
        return False, f"{where} is local but {' and '.join(missing)} not (run `sesame-tts download`)"
    return True, f"weights found locally: {where}"


def download_all(settings: Settings) -> dict[str, Path]:
    """Fetch everything CSM needs into the hub cache (for `sesame-tts download`)."""
    from .voice_prompts import BUILTIN_VOICES, prompt_files

    directory = model_dir(settings)
    tok = tokenizer_source(settings, directory)
    if not Path(tok).expanduser().exists():
        tok = hub.snapshot(str(tok), hub.TOKENIZER_PATTERNS, settings.hf_token, "the Llama-3.2 tokenizer",
                           required=("tokenizer*.json",))
    mimi = mimi_source(settings, directory)
    if not Path(mimi).expanduser().exists():
        mimi = hub.file(str(mimi), hub.MIMI_FILENAME, settings.hf_token, "the Mimi codec")
    paths = {"model": directory, "tokenizer": Path(tok), "mimi": Path(mimi)}
    for voice in BUILTIN_VOICES:
        paths[f"voice:{voice}"] = prompt_files(voice, directory, settings.hf_token)[0]
    return paths
