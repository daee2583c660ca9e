"""Mimi in MLX layout: its config as JSON and its derived arrays after a weight change.

An MLX-layout Mimi directory holds `mimi_config.json` (a MimiConfig as a dict) and
`model.safetensors`. loading.py reads such directories; random_weights.py builds Mimis
from configs; the tests' fixture writer writes them. All go through here, so neither
imports the other.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

CONFIG_FILE = "mimi_config.json"
WEIGHTS_FILE = "model.safetensors"


def mimi_config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def mimi_config_from_dict(data: dict):
    from mlx_audio.codec.models.mimi.mimi import MimiConfig
    from mlx_audio.codec.models.mimi.modules import SeanetConfig, TransformerConfig

    data = copy.deepcopy(data)
    data["seanet"] = SeanetConfig(**data["seanet"])
    data["transformer"] = TransformerConfig(**data["transformer"])
    return MimiConfig(**data)


def is_mlx_mimi_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def read_mlx_mimi(path: Path):
    """A Mimi from an MLX-layout directory (not yet evaluated)."""
    from mlx_audio.codec.models.mimi import Mimi

    mimi = Mimi(mimi_config_from_dict(json.loads((path / CONFIG_FILE).read_text())))
    mimi.load_weights(str(path / WEIGHTS_FILE), strict=True)
    refresh_derived(mimi)
    return mimi


def refresh_derived(mimi) -> None:
    """Recompute what mlx-audio caches from the weights (codebook tables, expanded conv
    weights): without this a Mimi whose weights were replaced decodes with the old ones."""
    from mlx_audio.codec.models.mimi.modules import ConvTranspose1d, EuclideanCodebook

    def refresh(module, name, _):
        if isinstance(module, (EuclideanCodebook, ConvTranspose1d)) and name in ("initialized", "weight"):
            module.update_in_place()
        return True

    mimi.filter_and_map(refresh)
