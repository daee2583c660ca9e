"""Nothing written outside CACHE_DIR, nothing sent anywhere: a server sold as private keeps
its temporary files in its own folder and turns its libraries' telemetry off.

Called by the CLI before any backend is imported. It sets the process environment because
that is the only switch these libraries read: MLX compiles its CPU kernels under $TMPDIR/mlx,
onnxruntime (Piper) writes a device id under ~/.cache/Microsoft unless
ORT_DISABLE_TELEMETRY is set when it is imported, waitress spools large request bodies with
tempfile, and huggingface_hub reports downloads unless HF_HUB_DISABLE_TELEMETRY is set.
(The Hugging Face cache of model weights stays where HF_HOME says: it is shared, on purpose.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TELEMETRY_OFF = {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def telemetry_off() -> None:
    """Before onnxruntime or huggingface_hub is imported (they read it at import)."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)


def keep_files_under(cache_dir: Path) -> Path:
    """Point every temporary file of this process at CACHE_DIR/tmp (private to the user)."""
    telemetry_off()
    tmp = Path(cache_dir).expanduser() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o700)
    os.environ["TMPDIR"] = str(tmp)  # MLX's kernel cache, native libraries
    tempfile.tempdir = str(tmp)  # Python's tempfile (waitress's request-body spool)
    return tmp
