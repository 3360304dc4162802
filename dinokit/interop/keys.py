"""IDEA-Research/DINO state_dicts -> dinokit state_dicts: the key table and its checks.

The official model keeps the transformer under `transformer.*`, the ResNet under
`backbone.0.body.*` and the shared prediction heads under several aliases. dinokit's module names
mirror the official ones inside layers, so the conversion is a prefix table (below) plus a check
that every alias of a shared head holds the same tensor. Nothing here reads files or configs
beyond the `ModelConfig` whose shapes the state must fit.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import Tensor

from dinokit.config import ModelConfig
from dinokit.errors import CheckpointError

# official prefix -> dinokit prefix (the longest matching prefix wins).
PREFIXES: dict[str, str] = {
    "backbone.0.body.": "backbone.body.",                     # ResNet with FrozenBatchNorm buffers
    "input_proj.": "input_proj.",                             # i.0 conv, i.1 GroupNorm
    "transformer.level_embed": "level_embed",
    "transformer.encoder.layers.": "encoder.layers.",         # self_attn, norm1, linear1/2, norm2
    "transformer.decoder.layers.": "decoder.layers.",         # self_attn, norm2, cross_attn, norm1, linear1/2, norm3
    "transformer.decoder.norm.": "decoder.norm.",
    "transformer.decoder.ref_point_head.": "decoder.ref_point_head.",
    "transformer.tgt_embed.": "queries.tgt_embed.",           # learned content queries
    "transformer.enc_output.": "queries.enc_output.",
    "transformer.enc_output_norm.": "queries.enc_output_norm.",
    "transformer.enc_out_class_embed.": "queries.enc_class_head.",
    "transformer.enc_out_bbox_embed.": "queries.enc_box_head.",
    "label_enc.": "denoising.label_enc.",
}

# Decoder heads shared by all layers: every alias `<prefix><layer>.<rest>` must be equal.
SHARED_HEADS: dict[str, tuple[str, ...]] = {
    "decoder.class_head.": ("class_embed.", "transformer.decoder.class_embed."),
    "decoder.box_head.": ("bbox_embed.", "transformer.decoder.bbox_embed."),
}

# Tensors whose shape depends on the number of classes (re-initialised for another dataset).
CLASS_DEPENDENT = ("decoder.class_head.", "queries.enc_class_head.", "denoising.label_enc.")

_SHARED_KEY = re.compile(r"^(?P<prefix>(?:transformer\.decoder\.)?(?:class|bbox)_embed\.)(?P<layer>\d+)\.(?P<rest>.+)$")


def is_official_state(state: dict[str, object]) -> bool:
    """True when the keys look like an official DINO model (`transformer.*` and `backbone.0.body.*`)."""
    keys = [k.removeprefix("module.") for k in state]
    return any(k.startswith("transformer.") for k in keys) and any(k.startswith("backbone.0.body.") for k in keys)


def _rename(key: str) -> str | None:
    for prefix in sorted(PREFIXES, key=len, reverse=True):
        if key.startswith(prefix) and (prefix.endswith(".") or key == prefix):
            return PREFIXES[prefix] + key[len(prefix):]
    return None


def official_to_dinokit(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official state_dict to dinokit names; aliases of shared heads collapse to one.

    Raises CheckpointError when the aliases of a shared head differ (a checkpoint trained with
    per-layer heads cannot be represented) or when keys belong to nothing dinokit knows.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    aliases: dict[str, list[tuple[str, Tensor]]] = {}
    for raw_key, value in state.items():
        key = raw_key.removeprefix("module.")
        if key.endswith("num_batches_tracked"):
            continue
        shared = _SHARED_KEY.match(key)
        if shared:
            target = next(t for t, srcs in SHARED_HEADS.items() if shared["prefix"] in srcs) + shared["rest"]
            aliases.setdefault(target, []).append((key, value))
            continue
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"official checkpoint has keys dinokit does not know: {_names(unknown)}")
    for target, copies in aliases.items():
        first_key, first = copies[0]
        for key, value in copies[1:]:
            if value.shape != first.shape or not torch.equal(value, first):
                raise CheckpointError(
                    f"official checkpoint has per-layer heads ({key} differs from {first_key}); dinokit "
                    "shares one class head and one box head across decoder layers (dec_pred_*_embed_share)"
                )
        out[target] = first
    return out


def official_name(key: str) -> str:
    """The official name of a dinokit key (messages about official files speak their language)."""
    for official, ours in sorted(PREFIXES.items(), key=lambda item: len(item[1]), reverse=True):
        if key.startswith(ours) and (ours.endswith(".") or key == ours):
            return official + key[len(ours):]
    for ours, (official, _) in SHARED_HEADS.items():
        if key.startswith(ours):
            return f"{official}0.{key[len(ours):]}"
    return key


def check_state(
    state: dict[str, Tensor], expected: dict[str, Tensor], what: str, name: Callable[[str], str] = str
) -> None:
    """CheckpointError naming missing / unexpected keys and shape mismatches of `state` vs `expected`
    (each key shown as `name(key)`)."""
    missing = sorted(name(k) for k in set(expected) - set(state))
    unexpected = sorted(name(k) for k in set(state) - set(expected))
    shapes = [
        f"{name(k)} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch (file vs model): {_names(shapes)}")
    if problems:
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(problems))


def _names(items: list[str], limit: int = 4) -> str:
    """The first few names of a list, and how many more there are."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def official_shapes(state: dict[str, Tensor], nheads: int) -> dict[str, int]:
    """ModelConfig fields read off an official state_dict's shapes.

    `nheads` cannot be read off shapes (the attention projections only fix heads x points); it is
    given, and the number of sampling points follows from it.
    """
    keys = {k.removeprefix("module."): v for k, v in state.items()}

    def need(key: str) -> Tensor:
        if key not in keys:
            raise CheckpointError(f"official checkpoint is missing {key}")
        return keys[key]

    def count(pattern: str) -> int:
        found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
        return max(found) + 1 if found else 0

    levels, hidden = need("transformer.level_embed").shape
    enc_layers = count(r"transformer\.encoder\.layers\.(\d+)\.")
    dec_layers = count(r"transformer\.decoder\.layers\.(\d+)\.")
    if not enc_layers or not dec_layers:
        raise CheckpointError("official checkpoint has no encoder or decoder layers")
    if count(r"backbone\.0\.body\.layer3\.(\d+)\.") != 6 or "backbone.0.body.layer1.0.conv3.weight" not in keys:
        raise CheckpointError("only official ResNet-50 checkpoints can be converted (the backbone is not a ResNet-50)")
    heads_points = {
        "enc_points": need("transformer.encoder.layers.0.self_attn.attention_weights.weight").shape[0],
        "dec_points": need("transformer.decoder.layers.0.cross_attn.attention_weights.weight").shape[0],
    }
    points = {}
    for name, rows in heads_points.items():
        if rows % (nheads * levels):
            raise CheckpointError(
                f"official checkpoint attention has {rows} weights per query, not a multiple of "
                f"{nheads} heads x {levels} levels: set model.nheads"
            )
        points[name] = rows // (nheads * levels)
    return {
        "num_feature_levels": int(levels),
        "hidden_dim": int(hidden),
        "enc_layers": enc_layers,
        "dec_layers": dec_layers,
        "dim_feedforward": int(need("transformer.encoder.layers.0.linear1.weight").shape[0]),
        "num_queries": int(need("transformer.tgt_embed.weight").shape[0]),
        "num_classes": int(need("class_embed.0.weight").shape[0]),
        **points,
    }


def fits_official(cfg: ModelConfig) -> list[str]:
    """Why a dinokit configuration cannot hold official weights (empty when it can)."""
    wanted = {"queries": "mixed", "attention": "deformable", "backbone": "resnet50"}
    problems = [f"model.{k} must be {v} (is {getattr(cfg, k)})" for k, v in wanted.items() if getattr(cfg, k) != v]
    if cfg.weights is None:
        problems.append("model.weights must be set (the official backbone uses frozen BatchNorm)")
    if cfg.num_feature_levels < 4:
        problems.append("model.num_feature_levels must be 4 or 5")
    return problems
