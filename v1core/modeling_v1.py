"""V1ForConditionalGeneration: Qwen2.5-VL plus point-and-copy, on current transformers.

At every position the model scores the text vocabulary *and every image patch of the prompt*:

    logits = [ gen_logits[..., :copy_token_start]  ∥  copy_q(h_t) · copy_k(H_img)ᵀ / √hidden ]

`H_img` are the last-layer hidden states at the prompt's image positions (the input embeddings with
`use_embeddings_as_keys`). Choosing id `copy_token_start + k` feeds merged patch k's vision embedding
back as the next input. Keys and values are computed once at prefill and kept with the KV cache
(`CopyMemory`, attached to the `Cache` object), so decoding never re-reads the image.

This mirrors the paper's reference (`jun297/v1`, transformers 4.51) number for number, with one fix the
reference's fixtures also use: image tokens are gathered in a *stable* order, so copy index k is the
k-th merged patch in row-major order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.modeling_outputs import MultimodalCausalLMOutputWithPast

from .configuration_v1 import V1Config

# transformers 4.51 saved Qwen2.5-VL (and therefore v1-7B) with `visual.*` and `model.layers.*` at the top;
# current transformers nests them as `model.visual.*` and `model.language_model.*`.
LEGACY_KEY_RENAMES = [
    (r"^visual", "model.visual"),
    (r"^model(?!\.(language_model|visual))", "model.language_model"),
]


@dataclass
class CopyMemory:
    """Pointer keys and copy values of the prompt's image tokens, cached at prefill.

    keys:   [batch, n_patches, copy_hidden]  copy_k_head(last-layer states at image positions)
    values: [batch, n_patches, hidden]       vision-merger embeddings (what a copy feeds back)
    mask:   [batch, n_patches] bool          False for right-padding when images differ in size
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor

    @property
    def n_patches(self) -> torch.Tensor:
        return self.mask.sum(dim=1)


@dataclass
class V1CausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    """Adds the gate value (when `use_gate`) and the loss parts; generation ignores the extras."""

    gate: torch.FloatTensor | None = None
    gen_loss: torch.FloatTensor | None = None
    z_loss: torch.FloatTensor | None = None


def gather_image_tokens(features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack the masked positions of each row to the front, *keeping their order*, right-padded with zeros.

    The reference used an unstable argsort here, which on CPU permutes image tokens; a stable sort keeps
    copy index k = k-th merged patch in row-major order, which is what the processor and data assume.
    """
    batch, length, channels = features.shape
    counts = mask.sum(dim=1)
    width = max(int(counts.max().item()) if batch else 0, 1)
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
    packed = features.gather(1, order.unsqueeze(-1).expand(-1, -1, channels))
    valid = torch.arange(width, device=features.device).unsqueeze(0) < counts.unsqueeze(1)
    packed = torch.where(valid.unsqueeze(-1), packed, torch.zeros_like(packed))
    return packed, valid


class V1ForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    config_class = V1Config
    config: V1Config
    _keys_to_ignore_on_load_unexpected = None

    def __init__(self, config: V1Config):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        self.copy_scale = 1.0 / math.sqrt(hidden)  # the reference's copy_init_scale
        if config.do_copy:
            if config.tie_copy_heads:
                self._copy_head = nn.Linear(hidden, config.copy_hidden_size)
            else:
                self._copy_q_head = nn.Linear(hidden, config.copy_hidden_size)
                self._copy_k_head = nn.Linear(hidden, config.copy_hidden_size)
            if config.use_gate:
                self.gate = nn.Linear(hidden, 1, bias=False)
        self.post_init()

    # ------------------------------------------------------------------ heads
    @property
    def copy_q_head(self) -> nn.Linear:
        return self._copy_head if self.config.tie_copy_heads else self._copy_q_head

    @property
    def copy_k_head(self) -> nn.Linear:
        return self._copy_head if self.config.tie_copy_heads else self._copy_k_head

    @torch.no_grad()
    def init_copy_heads(self) -> None:
        """Identity × 1/√hidden, biases 0: how v1 initialised its heads before training (used by demo training)."""
        heads = [self._copy_head] if self.config.tie_copy_heads else [self._copy_q_head, self._copy_k_head]
        for head in heads:
            rows, cols = head.weight.shape
            head.weight.copy_(torch.eye(rows, cols) * self.copy_scale)
            head.bias.zero_()
        if self.config.use_gate:
            self.gate.weight.zero_()

    # ------------------------------------------------------------------ inputs
    def mm_token_type_ids(self, input_ids: torch.LongTensor) -> torch.IntTensor:
        """0 text, 1 image, 2 video — what current Qwen2.5-VL needs for 3-D (M-RoPE) positions.

        Inputs from the reference pipeline carry none; without them transformers silently uses 1-D
        positions for image tokens and the logits drift.
        """
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        types[input_ids == self.config.image_token_id] = 1
        types[input_ids == self.config.video_token_id] = 2
        return types

    def build_copy_memory(
        self, inputs_embeds: torch.Tensor, hidden_states: torch.Tensor, image_mask: torch.Tensor
    ) -> CopyMemory:
        key_states = inputs_embeds if self.config.use_embeddings_as_keys else hidden_states
        if self.config.normalize_copy_states:
            key_states = F.normalize(key_states, p=2, dim=-1)
        keys, mask = gather_image_tokens(self.copy_k_head(key_states), image_mask)
        values, _ = gather_image_tokens(inputs_embeds.detach(), image_mask)
        return CopyMemory(keys=keys, values=values, mask=mask)

    def embed_copy_tokens(
        self, inputs_embeds: torch.Tensor, input_ids: torch.LongTensor, values: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Replace each `<|copy_k|>` position's embedding by patch k's vision embedding."""
        patch = input_ids - self.config.copy_token_start
        is_copy = patch >= 0
        if not bool(is_copy.any()):
            return inputs_embeds
        available = mask.sum(dim=1, keepdim=True)
        if bool((is_copy & (patch >= available)).any()):
            bad = sorted({int(p) for p in patch[is_copy & (patch >= available)].tolist()})
            raise ValueError(
                f"copy token(s) point at patch(es) {bad[:5]} but the image has only {int(available.min())} patches"
            )
        index = patch.clamp(min=0)
        copied = values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
        return torch.where(is_copy.unsqueeze(-1), copied.to(inputs_embeds.dtype), inputs_embeds)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        copy_memory: CopyMemory | None = None,
        **kwargs,
    ) -> V1CausalLMOutputWithPast:
        cfg = self.config
        if not cfg.do_copy:
            return super().forward(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, pixel_values=pixel_values,
                image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids,
                logits_to_keep=logits_to_keep, **kwargs,
            )
        if input_ids is None:
            raise ValueError("v1 needs input_ids: copy tokens are ids, not embeddings")
        if pixel_values_videos is not None:
            raise ValueError("v1 does not support video inputs (neither does the reference)")

        # Copy tokens enter the decoder as the region token, then take their patch's embedding.
        text_ids = input_ids.masked_fill(input_ids >= cfg.copy_token_start, cfg.region_token_id)
        image_mask = text_ids == cfg.image_token_id
        if mm_token_type_ids is None and image_grid_thw is not None:
            mm_token_type_ids = self.mm_token_type_ids(text_ids)

        if inputs_embeds is None:
            inputs_embeds = self.model.get_input_embeddings()(text_ids)
        if pixel_values is not None:
            image_embeds = self.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
            image_embeds = torch.cat(image_embeds.pooler_output, dim=0).to(inputs_embeds.device, inputs_embeds.dtype)
            n_tokens = int(image_mask.sum())
            if n_tokens != image_embeds.shape[0]:
                raise ValueError(f"{n_tokens} image tokens in the text but {image_embeds.shape[0]} image features")
            image_positions = image_mask.unsqueeze(-1).expand_as(inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(image_positions, image_embeds)

        if copy_memory is None and cache is not None:
            copy_memory = getattr(cache, "v1_copy_memory", None)
        if copy_memory is None:  # prefill: values come from this very input
            values, value_mask = gather_image_tokens(inputs_embeds, image_mask)
        else:
            values, value_mask = copy_memory.values, copy_memory.mask
        inputs_embeds = self.embed_copy_tokens(inputs_embeds, input_ids, values, value_mask)

        outputs = self.model(
            input_ids=text_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            image_grid_thw=image_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state

        if copy_memory is None:
            if not bool(image_mask.any()):
                raise ValueError("v1 needs an image in the prompt: the pointer scores image patches")
            copy_memory = self.build_copy_memory(inputs_embeds, hidden_states, image_mask)
            if outputs.cache is not None:
                outputs.cache.v1_copy_memory = copy_memory

        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep, :]
        logits, gate = self.pointer_logits(hidden_states, copy_memory)

        loss = gen_loss = z_loss = None
        if labels is not None:
            loss, gen_loss, z_loss = self.v1_loss(logits, labels)

        return V1CausalLMOutputWithPast(
            loss=loss,
            logits=logits.float(),
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            gate=gate,
            gen_loss=gen_loss,
            z_loss=z_loss,
        )

    def pointer_logits(
        self, hidden_states: torch.Tensor, memory: CopyMemory
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[text logits below copy_token_start ∥ one logit per patch]; padded patches get the dtype minimum."""
        cfg = self.config
        gen_logits = self.lm_head(hidden_states)
        query = F.normalize(hidden_states, p=2, dim=-1) if cfg.normalize_copy_states else hidden_states
        query = self.copy_q_head(query)
        copy_logits = (query @ memory.keys.transpose(-1, -2)).to(gen_logits.device) * self.copy_scale
        gate = None
        if cfg.use_gate:
            gate = torch.sigmoid(self.gate(hidden_states))
            gen_logits = gen_logits * (1 - gate)
            copy_logits = copy_logits * gate
        copy_logits = copy_logits.masked_fill(
            ~memory.mask[:, None, :].to(copy_logits.device), torch.finfo(copy_logits.dtype).min
        )
        logits = torch.cat([gen_logits[..., : cfg.copy_token_start], copy_logits], dim=-1)
        if cfg.use_cfg:
            width = cfg.text_config.vocab_size + cfg.copy_token_num
            pad = logits.new_full((*logits.shape[:-1], width - logits.shape[-1]), torch.finfo(logits.dtype).min)
            logits = torch.cat([logits, pad], dim=-1)
        return logits, gate

    def v1_loss(self, logits: torch.Tensor, labels: torch.LongTensor):
        """Cross-entropy over [vocab ∥ patches] + top-k z-loss, as the paper trains."""
        cfg = self.config
        shift_logits = logits[:, :-1, :].float()
        shift_labels = labels[:, 1:].to(shift_logits.device)
        smoothing = float(cfg.label_smoothing) if cfg.label_smoothing else 0.0
        gen_loss = F.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
            ignore_index=-100, label_smoothing=smoothing,
        )
        loss, z_loss = gen_loss, None
        if cfg.z_loss_weight > 0:
            valid = shift_labels >= 0
            k = min(cfg.z_loss_top_k, shift_logits.shape[-1])
            lse = torch.logsumexp(torch.topk(shift_logits, k=k, dim=-1).values, dim=-1)
            z_loss = lse[valid].pow(2).mean() * cfg.z_loss_weight
            loss = loss + z_loss
            z_loss = z_loss.detach()
        return loss, gen_loss.detach(), z_loss

    # ------------------------------------------------------------------ generation
    def generate(self, inputs: torch.Tensor | None = None, **kwargs):
        """`GenerationMixin.generate`, deriving `mm_token_type_ids` when the inputs carry none."""
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        needs_types = kwargs.get("mm_token_type_ids") is None and kwargs.get("image_grid_thw") is not None
        if needs_types and input_ids is not None:
            text_ids = input_ids.masked_fill(input_ids >= self.config.copy_token_start, self.config.region_token_id)
            kwargs["mm_token_type_ids"] = self.mm_token_type_ids(text_ids)
        return super().generate(inputs, **kwargs)


def register() -> None:
    """Make `AutoConfig` / `AutoModel*` and the checkpoint key renames know about v1 (idempotent)."""
    from transformers.conversion_mapping import (
        WeightRenaming,
        get_checkpoint_conversion_mapping,
        register_checkpoint_conversion_mapping,
    )

    try:
        AutoConfig.register("v1", V1Config)
    except ValueError:
        pass
    for auto in (AutoModel, AutoModelForImageTextToText):
        try:
            auto.register(V1Config, V1ForConditionalGeneration)
        except ValueError:
            pass
    if get_checkpoint_conversion_mapping("V1ForConditionalGeneration") is None:
        register_checkpoint_conversion_mapping(
            "V1ForConditionalGeneration",
            [WeightRenaming(source_patterns=s, target_patterns=t) for s, t in LEGACY_KEY_RENAMES],
        )


register()

__all__ = ["V1ForConditionalGeneration", "CopyMemory", "V1CausalLMOutputWithPast", "gather_image_tokens", "register"]
