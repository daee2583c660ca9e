"""The csm-torch backend: Sesame CSM-1B on PyTorch (CUDA in bfloat16, else CPU in float32),
over transformers' CsmForConditionalGeneration and MimiModel, with our own frame loop. The
orchestration (voices, conversation memory, windows, streaming) is the MLX backend's
CsmBackend; only the runtime differs. Plugin functions: see backends/registry.py.

Modules, one job each:
  backend.py        CsmTorchBackend: CsmBackend on the TorchRuntime
  runtime.py        the loaded model, Mimi, frame loop and voice prefixes (inference thread)
  loading.py        transformers-layout model from MODEL_PATH / TORCH_MODEL_ID, or random weights
  config.py         transformers' configs for the real shapes and the random flavors
  random_weights.py random CSM (and Mimi) of a flavor
  frame_loop.py     prefill + depth decoder + the streaming loop, static KV cache
  kv_cache.py       the static backbone cache with voice-prefix snapshots
  sampling.py       temperature + top-k from a torch.Generator
  codec.py          Mimi decoded frame by frame with its streaming state; prompt encoding
  convert.py        CSM weights MLX <-> transformers
  mimi_convert.py   Mimi weights MLX <-> transformers
"""

from __future__ import annotations

from sesame_server.config import Settings

__all__ = ["available", "bench", "convert_model", "create", "download"]


def available(settings: Settings, *, auto: bool = False) -> tuple[bool, str]:
    """Whether csm-torch can run here without downloading anything (cheap, no network).

    With `auto`, also whether it suits this machine: a CUDA GPU (on a CPU CSM is far slower
    than real time) and the weights already local."""
    try:
        import torch
        from transformers import CsmForConditionalGeneration  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        return False, f"PyTorch is not usable here ({exc}; pip install -e '.[torch]')"
    if settings.random_weights:
        return True, f"random weights requested (flavor {settings.random_weights}): nothing to download"
    from .loading import local_status

    if auto and not torch.cuda.is_available():
        return False, "no CUDA GPU (CSM on a CPU is far slower than real time; BACKEND=csm-torch forces it)"
    ok, where = local_status(settings)
    if not ok:
        return False, where
    return True, f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, weights: {where}"


def create(settings: Settings):
    from .backend import CsmTorchBackend

    return CsmTorchBackend(settings)


def download(settings: Settings) -> dict:
    """Fetch the model (with Mimi and the tokenizer) and the voice prompts ahead of time."""
    from sesame_server.backends.csm.voice_prompts import BUILTIN_VOICES, prompt_files

    from .loading import model_dir

    directory = model_dir(settings)
    paths = {"model": directory}
    for voice in BUILTIN_VOICES:
        paths[f"voice:{voice}"] = prompt_files(voice, directory, settings.hf_token)[0]
    return paths


def convert_model(source, target, to: str, settings: Settings):
    """`sesame-tts convert`: a model directory into the other layout ("transformers" or "mlx")."""
    from . import convert_dir

    if to == "transformers":
        return convert_dir.to_transformers(source, target, settings)
    return convert_dir.to_mlx(source, target)


def bench(args, settings: Settings) -> dict:
    """`sesame-tts bench --backend csm-torch`: our loop against transformers' generate(), then
    the three parity checks (unless --no-parity)."""
    from sesame_server.backends.csm.benchmark import run

    from .backend import CsmTorchBackend

    def checks(runtime) -> dict:
        from . import parity

        graphs = runtime.loop.graphs  # CUDA only: the depth decoder replayed as captured graphs
        return {"parity": parity.report(runtime), "depth_graph_replays": graphs.replays if graphs else None}

    return run(args, settings, CsmTorchBackend, None if args.no_parity else checks)
