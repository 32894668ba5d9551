"""V1Config: Qwen2.5-VL's config plus the point-and-copy fields of the published v1 checkpoint.

The published `config.json` (transformers 4.51) is *flat*: text fields sit at the top level next to
`vision_config`. `Qwen2_5_VLConfig` already folds flat text fields into `text_config`; we only add the
v1 fields, with the defaults of the reference `V1Config`, so every field of that config is honoured.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import Qwen2_5_VLConfig

from .copy_tokens import COPY_TOKEN_START


@strict
class V1Config(Qwen2_5_VLConfig):
    r"""
    region_token_id (`int`, defaults to 151662 = `<|fim_pad|>`):
        Id every copy token is embedded as before its patch embedding replaces it.
    copy_token_start (`int`, defaults to `COPY_TOKEN_START` = 151665):
        Id of `<|copy_0|>`; id `copy_token_start + k` copies merged patch k.
    copy_token_num (`int`, defaults to 30000): how many copy tokens the tokenizer carries.
    copy_hidden_size (`int`, optional): width of the copy heads (defaults to the text hidden size).
    use_embeddings_as_keys (`bool`): pointer keys from the input embeddings instead of last-layer states.
    normalize_copy_states (`bool`): L2-normalise query and key states before the copy heads.
    tie_copy_heads (`bool`): one shared `_copy_head` for queries and keys.
    use_gate (`bool`): a sigmoid gate mixing text (×(1−g)) and copy (×g) logits.
    use_cfg (`bool`): pad logits to `vocab_size + copy_token_num` (the reference's CFG mode).
    do_copy (`bool`): False turns v1 back into plain Qwen2.5-VL.
    copy_extraction_layer (`int`): must be -1 (last layer), as in the reference.
    copy_scaler, z_loss_weight, z_loss_top_k, label_smoothing, separate_copy_loss: training fields kept for
        round-tripping; `copy_scaler` is unused, as in the reference.
    """

    model_type = "v1"

    region_token_id: int = 151662
    copy_token_start: int = COPY_TOKEN_START
    copy_token_num: int = 30000
    copy_scaler: float = 0.1
    use_embeddings_as_keys: bool = False
    normalize_copy_states: bool = False
    copy_extraction_layer: int = -1
    tie_copy_heads: bool = False
    use_cfg: bool = False
    copy_hidden_size: int | None = None
    z_loss_weight: float = 1e-5
    z_loss_top_k: int = 40
    use_gate: bool = False
    label_smoothing: bool | float = False
    separate_copy_loss: bool = False
    do_copy: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.copy_hidden_size is None:
            self.copy_hidden_size = self.text_config.hidden_size
        if self.copy_extraction_layer != -1:
            raise ValueError(f"copy_extraction_layer must be -1 (last layer), got {self.copy_extraction_layer}")
        if self.copy_token_start > self.text_config.vocab_size:
            raise ValueError(
                f"copy_token_start ({self.copy_token_start}) is beyond the text vocabulary "
                f"({self.text_config.vocab_size})"
            )


__all__ = ["V1Config"]
