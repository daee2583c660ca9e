"""Real server processes on the tiny random CSM, for the tests of several nodes
(test_cluster, test_turn_store, test_shared_voices): each its own port and CACHE_DIR, the
environment of a node behind a balancer, and MLX's CPU kernels already compiled."""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile

from sesame_server.bench_cluster import start_node
from tests.csm_tiny import tiny_model_dir
from tests.live import wait_ready


class Node:
    """One server process on the tiny CSM; `settings` add to (or override) its environment."""

    def __init__(self, name: str, tmp: Path, **settings: str):
        self.name = name
        _share_compiled_kernels(tmp / name)
        self.env = {"BACKEND": "csm", "MODEL_PATH": str(tiny_model_dir()), "WARMUP_ON_START": "false",
                    "MAX_QUEUE_DEPTH": "2", "DRAIN_SECONDS": "60",
                    "MAX_SENTENCE_SECONDS": "0.8",  # random weights never end a sentence: ten frames each
                    **settings}
        self.process, self.port = start_node(name, tmp, self.env)  # as `sesame-tts bench --cluster` does

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        wait_ready(self.url, self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _share_compiled_kernels(cache_dir: Path) -> None:
    """The node's CACHE_DIR/tmp (its TMPDIR, ops/privacy.py) gets this process's MLX kernel
    cache, which one generation here completes first (so no two nodes compile the same
    kernel at once). A fresh cache costs each node some 20 s of compiling on its first request."""
    (cache_dir / "tmp").mkdir(parents=True, mode=0o700, exist_ok=True)
    kernels = _compiled_kernels()
    if kernels.is_dir() and not (cache_dir / "tmp" / "mlx").exists():  # else MLX keeps them elsewhere
        (cache_dir / "tmp" / "mlx").symlink_to(kernels, target_is_directory=True)


@lru_cache(maxsize=None)
def _compiled_kernels() -> Path:
    from sesame_server.backends.csm import CsmBackend
    from tests.csm_tiny import make_request, speak, tiny_settings

    cache = Path(tempfile.mkdtemp(prefix="kernels-"))
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    backend = CsmBackend(tiny_settings(cache), max_frames_per_sentence=2)
    backend.load()
    speak(backend, make_request("Warm."))
    backend.unload()
    return Path(tempfile.gettempdir()) / "mlx"


def reference_wav(seconds: float = 3.0) -> bytes:
    """A voice to clone: a noisy tone (the tiny random CSM takes anything)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(24000 * seconds)) / 24000
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.2 * rng.standard_normal(len(t)))
    out = io.BytesIO()
    soundfile.write(out, audio.astype(np.float32), 24000, format="WAV")
    return out.getvalue()
