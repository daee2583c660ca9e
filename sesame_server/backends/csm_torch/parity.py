"""The three parity checks of the PyTorch backend, on whatever weights the runtime holds
(`sesame-tts bench --backend csm-torch` prints them; tests/test_csm_torch_*.py assert them):

  1. our torch loop vs transformers' own generate(), greedy: identical codes per frame;
  2. our torch loop vs our MLX loop on the same weights (converted): first-frame backbone
     logits' largest difference, and identical greedy codes per frame;
  3. Mimi on both, the same codes decoded frame by frame: largest sample difference,
     relative to the signal's peak.

2 and 3 need MLX (any machine where mlx imports: Apple Silicon, or the Linux CPU build).
"""

from __future__ import annotations

import numpy as np
import torch

from sesame_server.backends.csm.sampling_params import SamplingParams

from .frame_loop import TorchFrameLoop

GREEDY = SamplingParams(0.0, 50)
SENTENCE = "Hello there, how are you doing today?"


def report(runtime, frames: int = 20) -> dict:
    """{"generate": ..., "mlx": ..., "mimi": ...} for the runtime's model. It casts that model
    to float32 (the checks' precision): run it last."""
    model = runtime.model.float()
    text = runtime.builder.text(SENTENCE, 0)
    ours = _greedy(model, text, int(model.config.vocab_size), frames)
    result = {"frames": frames, "generate": _against_generate(model, text, ours)}
    try:
        import mlx.core  # noqa: F401
    except ImportError as exc:
        result["mlx"] = result["mimi"] = f"skipped: MLX is not importable ({exc})"
        return result
    result["mlx"] = _against_mlx(model, text, runtime.codec.bins, frames)
    result["mimi"] = _mimi_against_mlx(model, ours[:, :, None] % runtime.codec.bins)
    return result


def _greedy(model, frames, valid_ids: int, count: int) -> np.ndarray:
    loop = TorchFrameLoop(model, valid_ids=valid_ids, max_len=len(frames) + count + 2)
    return np.stack([host for _, host, _ in loop.generate(loop.prefill(frames), GREEDY, None, count)])


@torch.inference_mode()
def _against_generate(model, text, ours: np.ndarray) -> dict:
    ids = torch.as_tensor(text.tokens[:, -1], dtype=torch.long, device=model.device)[None]
    out = model.generate(input_ids=ids, max_new_tokens=len(ours), do_sample=False, depth_decoder_do_sample=False)
    reference = (out if isinstance(out, torch.Tensor) else out.sequences)[0].cpu().numpy()
    same = int((reference[:len(ours)] == ours[:len(reference)]).all(axis=1).sum())
    return {"identical_frames": same, "of": len(ours)}


def _mlx_model(model):
    import mlx.core as mx
    from mlx_audio.tts.models.sesame.sesame import SesameModel

    from .convert import hf_to_mlx
    from .convert_dir import mlx_config

    mlx_model = SesameModel(mlx_config(model.config))
    weights = hf_to_mlx(model.state_dict(), model.config)
    mlx_model.load_weights([(name, mx.array(value.float().cpu().numpy())) for name, value in weights.items()])
    return mlx_model


def _against_mlx(model, text, valid_ids: int, frames: int) -> dict:
    import mlx.core as mx

    from sesame_server.backends.csm.frame_loop import FrameLoop

    mlx_model = _mlx_model(model)
    mlx_loop = FrameLoop(mlx_model, valid_ids=valid_ids, max_len=len(text) + frames + 2)
    mlx_h = mlx_loop.prefill(text)
    mlx_logits = np.array(mlx_model.codebook0_head(mlx_h).astype(mx.float32))
    torch_loop = TorchFrameLoop(model, valid_ids=valid_ids, max_len=len(text) + frames + 2)
    with torch.inference_mode():
        torch_logits = model.lm_head(torch_loop.prefill(text)).float().cpu().numpy()
    mlx_codes = np.stack([host for _, host, _ in mlx_loop.generate(mlx_h, GREEDY, mx.random.key(0), frames)])
    ours = _greedy(model, text, valid_ids, frames)
    same = int((mlx_codes[:len(ours)] == ours[:len(mlx_codes)]).all(axis=1).sum())
    return {"first_logits_max_abs_diff": float(np.abs(torch_logits - mlx_logits).max()), "identical_frames": same,
            "of": frames}


def _mimi_against_mlx(model, codes: np.ndarray) -> dict:
    """codes [frames, codebooks, 1] decoded by both codecs, frame by frame."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_audio.codec.models.mimi import Mimi

    from sesame_server.backends.csm.codec import MimiCodec
    from sesame_server.backends.csm.mimi_io import refresh_derived

    from .codec import TorchMimiCodec
    from .convert_dir import mlx_mimi_config_for
    from .mimi_convert import hf_to_mlx

    mimi_config = model.config.codec_config
    mlx_mimi = Mimi(mlx_mimi_config_for(mimi_config))
    weights = hf_to_mlx(model.codec_model.state_dict(), mimi_config)
    mlx_mimi.load_weights([(name, mx.array(value.float().cpu().numpy())) for name, value in weights.items()],
                          strict=True)
    refresh_derived(mlx_mimi)
    nn.Module.eval(mlx_mimi)
    codebooks = codes.shape[1]
    mlx_codec, torch_codec = MimiCodec(mlx_mimi, codebooks), TorchMimiCodec(model.codec_model, codebooks)
    mlx_codec.reset()
    torch_codec.reset()
    mlx_pcm, torch_pcm = [], []
    for frame in codes:
        mlx_pcm.append(np.array(mlx_codec.decode_frame(mx.array(frame.T))))
        torch_pcm.append(torch_codec.decode_frame(torch.as_tensor(frame.T, dtype=torch.long)).float().cpu().numpy())
    a, b = np.concatenate(mlx_pcm), np.concatenate(torch_pcm)
    peak = float(np.abs(a).max()) or 1.0
    return {"max_abs_diff": float(np.abs(a - b).max()), "relative_to_peak": float(np.abs(a - b).max()) / peak,
            "samples": int(a.size)}
