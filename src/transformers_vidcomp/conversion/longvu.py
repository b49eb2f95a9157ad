r"""
The released LongVU key layout (Vision-CAIR/LongVU_*, `model.safetensors` / `pytorch_model.bin`) in our names.

The release's connector maps onto `LongVUCompressor` module for module, and its `mm_projector` onto the composite
model's projector:

| released key                                  | ours                                         |
|-----------------------------------------------|----------------------------------------------|
| `model.mm_projector_aux_0.{0,2,3}.*` (SigLIP) | `model.compressor.siglip_projector.{0,2,3}.*`|
| `model.mm_projector_aux_1.{0,2,3}.*` (DINOv2) | `model.compressor.dino_projector.{0,2,3}.*`  |
| `model.vision_sampler_0.layers.{i}.*`         | `model.compressor.aggregator.layers.{i}.*`   |
| `model.vision_query`                          | `model.compressor.vision_query`              |
| `model.mm_projector.{0,2}.*`                  | `model.multi_modal_projector.linear_{1,2}.*` |
| `model.embed_tokens.*`, `model.layers.*`, `model.norm.*` | `model.language_model.*`          |
| `lm_head.weight`                              | `lm_head.weight`                             |
"""

import re


COMPRESSOR_RENAMES: list[tuple[str, str]] = [
    (r"^model\.mm_projector_aux_0\.", "model.compressor.siglip_projector."),
    (r"^model\.mm_projector_aux_1\.", "model.compressor.dino_projector."),
    (r"^model\.vision_sampler_0\.", "model.compressor.aggregator."),
    (r"^model\.vision_query$", "model.compressor.vision_query"),
]
PROJECTOR_RENAMES: list[tuple[str, str]] = [
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
]


def released_compressor_key(key: str) -> str | None:
    r"""Our compressor's state-dict key (without `model.compressor.`) for a released connector key, else `None`."""
    for pattern, replacement in COMPRESSOR_RENAMES:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key).removeprefix("model.compressor.")
    return None
