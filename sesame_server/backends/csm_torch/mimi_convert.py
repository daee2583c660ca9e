"""Mimi weights between the MLX layout (mlx-audio's `Mimi`) and transformers' `MimiModel`, both ways.

The two implementations hold the same tensors under different names and layouts:

- Names: mlx-audio nests the SEANet as `init_conv1d`, `layers.i.{residuals.j,downsample,upsample}`
  and `final_conv1d`; transformers flattens it into one `ModuleList` where ELUs take indices
  too. The index map is rebuilt here from the config exactly as MimiEncoder/MimiDecoder build
  their lists, so any ratios / residual-layer count convert, not just one flavor's.
- Conv layouts: MLX convs are (out, k, in/groups), torch Conv1d is (out, in/groups, k); torch
  ConvTranspose1d is (in, out/groups, k). The transposed-conv reshuffle depends on groups (the
  depthwise upsample, groups == channels, and the groups=1 SEANet upsamplers differ), so it is
  written once for any group count.
- Attention: MLX stores q, k and v as one `in_proj`; transformers as q/k/v_proj. mlx-audio's
  Mimi uses `nn.RoPE(traditional=True)` (interleaved pairs) where transformers uses rotate_half,
  so q and k rows are permuted per head, as transformers' own conversion script does.
- Codebooks: only the stored `embedding_sum`/`cluster_usage`/`initialized` convert; both
  sides derive their lookup table from them (MLX: `mimi_io.refresh_derived`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping

from .convert import halves_to_interleaved, interleaved_to_halves

if TYPE_CHECKING:
    from torch import Tensor
    from transformers import MimiConfig, MimiModel


@dataclass(frozen=True)
class _Rule:
    """How one MLX tensor maps to transformers tensor(s)."""

    hf: tuple[str, ...]
    kind: str  # "same" | "conv" | "convtr" | "qkv"
    groups: int = 1


def _conv_pair(mlx_module: str, hf_module: str, kind: str = "conv", groups: int = 1) -> Iterator[tuple[str, _Rule]]:
    """A streamable (transposed) conv: MLX `<m>.conv.conv.*` / `<m>.convtr.convtr.*`, HF `<m>.conv.*`."""
    inner = "convtr.convtr" if kind == "convtr" else "conv.conv"
    yield f"{mlx_module}.{inner}.weight", _Rule((f"{hf_module}.conv.weight",), kind, groups)
    yield f"{mlx_module}.{inner}.bias", _Rule((f"{hf_module}.conv.bias",), "same")


def _resnet_pair(config, mlx_block: str, hf_block: str) -> Iterator[tuple[str, _Rule]]:
    # transformers' block list interleaves ELUs: [ELU, conv, ELU, conv] -> convs at 1, 3.
    for j in range(2):  # MimiResnetBlock: kernel sizes (residual_kernel_size, 1)
        yield from _conv_pair(f"{mlx_block}.block.{j}", f"{hf_block}.block.{2 * j + 1}")
    if config.use_conv_shortcut:
        yield from _conv_pair(f"{mlx_block}.shortcut", f"{hf_block}.shortcut")


def _encoder_seanet(config) -> Iterator[tuple[str, _Rule]]:
    hf = "encoder.encoder_seanet.layers"
    yield from _conv_pair("encoder.init_conv1d", f"{hf}.0")
    index = 1
    for i, _ in enumerate(reversed(config.upsampling_ratios)):
        for j in range(config.num_residual_layers):
            yield from _resnet_pair(config, f"encoder.layers.{i}.residuals.{j}", f"{hf}.{index}")
            index += 1
        index += 1  # ELU
        yield from _conv_pair(f"encoder.layers.{i}.downsample", f"{hf}.{index}")
        index += 1
    index += 1  # ELU
    yield from _conv_pair("encoder.final_conv1d", f"{hf}.{index}")


def _decoder_seanet(config) -> Iterator[tuple[str, _Rule]]:
    hf = "decoder.decoder_seanet.layers"
    yield from _conv_pair("decoder.init_conv1d", f"{hf}.0")
    index = 1
    for i, _ in enumerate(config.upsampling_ratios):
        index += 1  # ELU
        yield from _conv_pair(f"decoder.layers.{i}.upsample", f"{hf}.{index}", "convtr")
        index += 1
        for j in range(config.num_residual_layers):
            yield from _resnet_pair(config, f"decoder.layers.{i}.residuals.{j}", f"{hf}.{index}")
            index += 1
    index += 1  # ELU
    yield from _conv_pair("decoder.final_conv1d", f"{hf}.{index}")


def _transformer(config, mlx: str, hf: str) -> Iterator[tuple[str, _Rule]]:
    for n in range(config.num_hidden_layers):
        m, h = f"{mlx}.transformer.layers.{n}", f"{hf}.layers.{n}"
        for suffix in ("weight", "bias"):
            attn = f"{h}.self_attn"
            yield f"{m}.self_attn.in_proj.{suffix}", _Rule(
                tuple(f"{attn}.{p}_proj.{suffix}" for p in "qkv"), "qkv")
            yield f"{m}.self_attn.out_proj.{suffix}", _Rule((f"{attn}.o_proj.{suffix}",), "same")
            yield f"{m}.gating.linear1.{suffix}", _Rule((f"{h}.mlp.fc1.{suffix}",), "same")
            yield f"{m}.gating.linear2.{suffix}", _Rule((f"{h}.mlp.fc2.{suffix}",), "same")
            yield f"{m}.norm1.{suffix}", _Rule((f"{h}.input_layernorm.{suffix}",), "same")
            yield f"{m}.norm2.{suffix}", _Rule((f"{h}.post_attention_layernorm.{suffix}",), "same")
        yield f"{m}.layer_scale_1.scale", _Rule((f"{h}.self_attn_layer_scale.scale",), "same")
        yield f"{m}.layer_scale_2.scale", _Rule((f"{h}.mlp_layer_scale.scale",), "same")


def _quantizer(config) -> Iterator[tuple[str, _Rule]]:
    halves = (("rvq_first", "semantic_residual_vector_quantizer", config.num_semantic_quantizers),
              ("rvq_rest", "acoustic_residual_vector_quantizer",
               config.num_quantizers - config.num_semantic_quantizers))
    for mlx_half, hf_half, count in halves:
        m, h = f"quantizer.{mlx_half}", f"quantizer.{hf_half}"
        # 1x1 Conv1d projections: (out, 1, in) in MLX, (out, in, 1) in torch.
        yield f"{m}.input_proj.weight", _Rule((f"{h}.input_proj.weight",), "conv")
        yield f"{m}.output_proj.weight", _Rule((f"{h}.output_proj.weight",), "conv")
        for n in range(count):
            mc, hc = f"{m}.vq.layers.{n}.codebook", f"{h}.layers.{n}.codebook"
            yield f"{mc}.embedding_sum", _Rule((f"{hc}.embed_sum",), "same")
            yield f"{mc}.cluster_usage", _Rule((f"{hc}.cluster_usage",), "same")
            yield f"{mc}.initialized", _Rule((f"{hc}.initialized",), "same")


def _table(config) -> dict[str, _Rule]:
    """Every MLX tensor name a Mimi of this shape may hold -> its transformers counterpart(s).

    A half transformers' config drops (encoder_config/decoder_config None) is left out, so its
    MLX weights are reported as unknown rather than silently lost."""
    rules: list[tuple[str, _Rule]] = list(_quantizer(config))
    if config.encoder_config is not None:
        rules += _encoder_seanet(config)
        rules += _transformer(config, "encoder_transformer", "encoder.encoder_transformer")
        # ConvDownsample1d.conv is a StreamableConv1d: one more `.conv` than the SEANet's.
        rules += _conv_pair("downsample.conv", "encoder.downsample")
    if config.decoder_config is not None:
        rules += _decoder_seanet(config)
        rules += _transformer(config, "decoder_transformer", "decoder.decoder_transformer")
        rules += _conv_pair("upsample.convtr", "decoder.upsample", "convtr", config.upsample_groups)
    return dict(rules)


def _qkv_sizes(config) -> tuple[int, int, int]:
    head_dim = config.head_dim
    return (config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim,
            config.num_key_value_heads * head_dim)


def _rows(value: Tensor, permute, heads: int) -> Tensor:
    """Permute a q/k projection's rows per head (a bias is a one-column weight)."""
    if value.ndim == 1:
        return permute(value[:, None], heads)[:, 0]
    return permute(value, heads)


def _convtr_mlx_to_hf(weight: Tensor, groups: int) -> Tensor:
    # MLX (out, k, in/g) -> torch (in, out/g, k). Written per group so one formula serves the
    # depthwise upsample (g = channels: (C, k, 1) -> (C, 1, k)) and groups=1 ((out, k, in) -> (in, out, k)).
    if groups > 1 and weight.shape[0] == 1 and weight.shape[2] == groups:
        weight = weight.permute(2, 1, 0)  # older MLX depthwise layout (1, k, C), as mlx-audio reads it
    out_ch, k, in_per = weight.shape
    return (weight.reshape(groups, out_ch // groups, k, in_per).permute(0, 3, 1, 2)
            .reshape(groups * in_per, out_ch // groups, k))


def _convtr_hf_to_mlx(weight: Tensor, groups: int) -> Tensor:
    in_ch, out_per, k = weight.shape
    return (weight.reshape(groups, in_ch // groups, out_per, k).permute(0, 2, 3, 1)
            .reshape(groups * out_per, k, in_ch // groups))


def mlx_to_hf(weights: Mapping[str, Tensor], config: MimiConfig) -> dict[str, Tensor]:
    """MLX-layout Mimi weights (mlx-audio names) -> a transformers MimiModel state dict."""
    table = _table(config)
    out: dict[str, Tensor] = {}
    for name, value in weights.items():
        rule = table.get(name)
        if rule is None:
            raise KeyError(f"not a Mimi weight in the MLX layout: {name}")
        if rule.kind == "same":
            converted = (value,)
        elif rule.kind == "conv":
            converted = (value.transpose(-1, -2),)
        elif rule.kind == "convtr":
            converted = (_convtr_mlx_to_hf(value, rule.groups),)
        else:  # qkv: one in_proj -> q, k, v; q and k from interleaved to rotate-half RoPE order
            q, k, v = value.split(_qkv_sizes(config), dim=0)
            converted = (_rows(q, interleaved_to_halves, config.num_attention_heads),
                         _rows(k, interleaved_to_halves, config.num_key_value_heads), v)
        out.update((hf, tensor.contiguous()) for hf, tensor in zip(rule.hf, converted))
    return out


def hf_to_mlx(weights: Mapping[str, Tensor], config: MimiConfig) -> dict[str, Tensor]:
    """A transformers MimiModel state dict -> MLX-layout Mimi weights (mlx-audio names)."""
    import torch

    table = _table(config)
    known = {hf for rule in table.values() for hf in rule.hf}
    unknown = [name for name in weights if name not in known]
    if unknown:
        raise KeyError(f"not Mimi weights in transformers' layout: {unknown[:3]}")
    out: dict[str, Tensor] = {}
    for name, rule in table.items():
        present = [hf in weights for hf in rule.hf]
        if not any(present):
            continue  # e.g. a bias this model does not have
        if not all(present):
            raise KeyError(f"incomplete attention projections for {name}: {rule.hf}")
        values = [weights[hf] for hf in rule.hf]
        if rule.kind == "same":
            value = values[0]
        elif rule.kind == "conv":
            value = values[0].transpose(-1, -2)
        elif rule.kind == "convtr":
            value = _convtr_hf_to_mlx(values[0], rule.groups)
        else:
            q, k, v = values
            value = torch.cat([_rows(q, halves_to_interleaved, config.num_attention_heads),
                               _rows(k, halves_to_interleaved, config.num_key_value_heads), v], dim=0)
        out[name] = value.contiguous()
    return out


def mlx_mimi_weights(mlx_mimi) -> dict[str, Tensor]:
    """An mlx-audio Mimi's stored parameters as float32 torch tensors (MLX names)."""
    import mlx.core as mx
    import numpy as np
    import torch
    from mlx.utils import tree_flatten

    # np.array cannot take bfloat16 (the full flavor's dtype): widen in MLX first.
    return {name: torch.from_numpy(np.array(value.astype(mx.float32)))
            for name, value in tree_flatten(mlx_mimi.parameters())}


def hf_mimi_from_mlx(mlx_mimi, config: MimiConfig) -> MimiModel:
    """A float32 transformers MimiModel (eval mode) holding an mlx-audio Mimi's weights.

    Loading is strict: a weight either side lacks is an error, not a silently random tensor."""
    from transformers import MimiModel

    model = MimiModel(config)
    model.load_state_dict(mlx_to_hf(mlx_mimi_weights(mlx_mimi), config), strict=True)
    return model.float().eval()
