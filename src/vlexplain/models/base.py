"""The DualEncoder protocol: the one seam between attribution methods and models.

A dual encoder has two towers (``image`` and ``text``). Each tower is a sequence of blocks with a
stem before them and a head after them, so that a method can run "up to block L" and "from block
L+1" without knowing the model's private structure::

    h = tower.encode(x, stop=L)                 # hidden state after block L
    e = tower.encode(x, start=L, hidden=h)      # embedding from that state

Hidden states are ``(B, T, D)`` token sequences for transformer towers and ``(B, C, H, W)`` feature
maps for CNN towers; [`Tower.tokens`][vlexplain.models.base.Tower.tokens] gives a ``(B, T, D)`` view of either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

Modality = Literal["image", "text"]
TowerKind = Literal["vit", "cnn", "text"]

# Callback run after every block: ``fn(index, hidden, attention_probs_or_None) -> hidden | None``.
# Returning a tensor replaces the block's output (used by bottlenecks and hooks-free capture).
BlockCallback = Callable[[int, Tensor, "Tensor | None"], "Tensor | None"]


@dataclass
class TextBatch:
    """Tokenised texts, padded to a common length.

    Attributes:
        ids: ``(B, T)`` token ids.
        attention_mask: ``(B, T)`` 1 for real tokens (SOS/EOS included), 0 for padding.
        pool_index: ``(B,)`` position the tower pools at (EOS for CLIP, last token for SigLIP);
            -1 for mean-pooled towers.
        content_mask: ``(B, T)`` True for tokens shown to users (no SOS/EOS/padding).
        tokens: per text, the token strings at every position (padding included).
        texts: the original strings.
        truncated: per text, the part dropped because the text exceeded the context length.
    """

    ids: Tensor
    attention_mask: Tensor
    pool_index: Tensor
    content_mask: Tensor
    tokens: list[list[str]]
    texts: list[str]
    truncated: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(
            self.ids.to(device),
            self.attention_mask.to(device),
            self.pool_index.to(device),
            self.content_mask.to(device),
            self.tokens,
            self.texts,
            self.truncated,
        )

    def select(self, index: Sequence[int] | Tensor) -> TextBatch:
        """Rows ``index`` (repeats allowed), same padding length."""
        idx = torch.as_tensor(index, dtype=torch.long)
        il = idx.tolist()
        return TextBatch(
            self.ids[idx.to(self.ids.device)],
            self.attention_mask[idx.to(self.ids.device)],
            self.pool_index[idx.to(self.ids.device)],
            self.content_mask[idx.to(self.ids.device)],
            [self.tokens[i] for i in il],
            [self.texts[i] for i in il],
            [self.truncated[i] for i in il] if self.truncated else [],
        )

    def shown_tokens(self, i: int) -> list[str]:
        """The tokens of row ``i`` shown to users (no SOS/EOS/padding)."""
        m = self.content_mask[i].tolist()
        return [t for t, keep in zip(self.tokens[i], m) if keep]


TowerInput = Any  # Tensor (B, 3, H, W) for image towers, TextBatch for text towers


class Tower(nn.Module):
    """One encoder of a dual encoder, split into stem, blocks and head.

    Subclasses implement ``stem``, ``block`` and ``head``; everything else is shared.
    """

    modality: Modality
    kind: TowerKind
    num_prefix_tokens: int = 0  # image towers: tokens before the patch tokens (CLS, registers)
    has_attention: bool = True  # whether ``block`` can report attention probabilities
    grid: tuple[int, int] | None = None  # ViT image towers: (gh, gw) patch grid of the model's input size

    @property
    def class_token_pooled(self) -> bool:
        """Image towers: whether the head reads the class token alone (attention readouts then use its
        row; towers without one, or that pool over all tokens, are read as the mean over rows)."""
        return self.num_prefix_tokens > 0

    @property
    def num_blocks(self) -> int:
        raise NotImplementedError

    @property
    def attention_blocks(self) -> list[int]:
        """Blocks whose attention the attention methods read, all over the same tokens: every block
        of a transformer tower; the attention blocks of the last attention stage of a hybrid; none
        for a CNN."""
        return list(range(self.num_blocks)) if self.has_attention else []

    # --- to implement -------------------------------------------------------------------------
    def stem(self, x: TowerInput, inputs_embeds: Tensor | None = None) -> Tensor:
        """Hidden state before block 0. ``inputs_embeds`` (text) replaces the token embeddings."""
        raise NotImplementedError

    def block(
        self, i: int, h: Tensor, x: TowerInput, need_attn: bool = False, rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Run block ``i``; return the new hidden state and (if asked) attention probs (B, heads, T, T).

        With ``rows`` (B,) (only for towers whose ``pooled_positions`` is not None) return just
        the output at those query positions, (B, 1, D).
        """
        raise NotImplementedError

    def pooled_positions(self, x: TowerInput) -> Tensor | None:
        """(B,) the one position per row the head reads (CLS, EOS), or None if it reads more."""
        return None

    def pool_attention(self) -> Any:
        """The attention module of an attention-pooling head whose one learned query gives the
        embedding (SigLIP's MAP head in timm), recordable as a block's attention; None otherwise."""
        return None

    def head(self, h: Tensor, x: TowerInput) -> Tensor:
        """Final norm, pooling and projection: hidden after the last block -> (B, d) embedding."""
        raise NotImplementedError

    def project_tokens(self, h: Tensor, x: TowerInput) -> Tensor:
        """The head's final norm and projection applied to every token: (B, T, D) -> (B, T, d).

        Defined for towers whose head reads one token through a norm and a linear projection
        (CLIP's CLS / EOS pooling); dense methods (MaskCLIP, CLIP Surgery) read patch features so.
        """
        raise NotImplementedError(f"{type(self).__name__} has no per-token projection")

    def token_embeddings(self, x: TowerInput) -> Tensor:
        """Text towers: the (B, T, D) input embeddings that ``stem`` would look up."""
        raise NotImplementedError(f"{type(self).__name__} has no token embeddings")

    def block_modules(self) -> list[nn.Module]:
        """The modules holding the parameters of blocks 0 .. num_blocks - 1, in order."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its block modules")

    def head_ops(self, x: TowerInput) -> list[Any]:
        """The head as operations that are linear once norms and pooling weights are held fixed
        (the operations of ``vlexplain.models.head_ops``; for the decomposition)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its head for a decomposition")

    def attention_projection(self, i: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]] | None:
        """For blocks that do not run through ``prenorm_block``: block ``i``'s attention output
        projection (a module whose input is the heads' outputs, concatenated) and the map from its
        output to what the block adds to the residual stream (layer scale). None: the block's
        ``record_blocks`` record has them."""
        return None

    # --- shared ---------------------------------------------------------------------------------
    def encode(
        self,
        x: TowerInput,
        *,
        start: int = -1,
        stop: int | None = None,
        hidden: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        on_block: BlockCallback | None = None,
        need_attn: bool = False,
    ) -> Tensor:
        """Run the tower.

        Args:
            x: the tower's input (pixels or a TextBatch); used for masks and pooling positions.
            start: ``hidden`` is the output of block ``start`` (-1: the stem's output).
            stop: return the hidden state after block ``stop`` instead of the embedding.
            hidden: a hidden state to start from (else the stem is run on ``x``).
            inputs_embeds: text towers only: replaces the token embedding lookup.
            on_block: called after each block with (index, hidden, attention or None).
            need_attn: compute attention probabilities for ``on_block``.

        Returns:
            ``(B, d)`` un-normalised embedding, or the hidden state after block ``stop``.
        """
        n = self.num_blocks
        if stop is not None and not -1 <= stop < n:
            raise ValueError(f"layer {stop} is out of range for this {self.modality} tower (0..{n - 1})")
        if not -1 <= start < n:
            raise ValueError(f"layer {start} is out of range for this {self.modality} tower (0..{n - 1})")
        h = self.stem(x, inputs_embeds=inputs_embeds) if hidden is None else hidden
        if hidden is None and start != -1:
            raise ValueError("start needs a hidden state")
        if stop == -1:
            return h
        fast_last = on_block is None and not need_attn and stop is None
        for i in range(start + 1, n):
            rows = self.pooled_positions(x) if fast_last and i == n - 1 else None
            if rows is not None:
                # the head reads one position per row: compute the last block only there
                out, _ = self.block(i, h, x, rows=rows)
                ar = torch.arange(h.shape[0], device=h.device)
                h = h.index_put((ar, rows), out[:, 0])
                break
            h, attn = self.block(i, h, x, need_attn=need_attn and self.has_attention)
            if on_block is not None:
                new = on_block(i, h, attn)
                if new is not None:
                    h = new
            if stop is not None and i == stop:
                return h
        return self.head(h, x)

    def tokens(self, h: Tensor) -> Tensor:
        """(B, T, D) view of a hidden state (CNN feature maps: positions become tokens)."""
        if h.dim() == 4:
            return h.flatten(2).transpose(1, 2)
        return h

    def token_scores_to_grid(self, scores: Tensor, hidden: Tensor) -> Tensor:
        """Image towers: (B, T) per-token scores -> (B, gh, gw) map, prefix tokens dropped."""
        if hidden.dim() == 4:
            return scores.reshape(scores.shape[0], hidden.shape[2], hidden.shape[3])
        s = scores[:, self.num_prefix_tokens :]
        gh, gw = self.grid_size(s.shape[1])
        return s.reshape(s.shape[0], gh, gw)

    def grid_size(self, num_patches: int) -> tuple[int, int]:
        """(gh, gw) of the patch tokens: the tower's own ``grid``, never a guess."""
        if self.grid is None:
            raise ValueError(f"{type(self).__name__} does not declare its patch grid (Tower.grid)")
        gh, gw = self.grid
        if gh * gw != num_patches:
            raise ValueError(f"{num_patches} patch tokens do not fill this image tower's {gh}x{gw} patch grid")
        return gh, gw

    def default_layer(self) -> int:
        """Block whose output M2IB bottlenecks by default: block 9 of 12, same relative depth elsewhere."""
        return max(0, min(self.num_blocks - 1, round(10 * self.num_blocks / 12) - 1))


class DualEncoder(nn.Module):
    """A vision-language dual encoder seen through its two towers.

    Attributes:
        image, text: the towers.
        name: the spec it was loaded from.
        input_size: (H, W) the image tower expects.
    """

    image: Tower
    text: Tower
    name: str = "model"
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    # --- to implement -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> TextBatch:
        raise NotImplementedError

    def preprocess(self, image: Any) -> Tensor:
        """PIL image -> (3, H, W) normalised tensor (resize shortest side, centre crop)."""
        from ..images import default_preprocess

        return default_preprocess(image, self.input_size, self.mean, self.std)

    @property
    def logit_scale(self) -> Tensor:
        return torch.tensor(100.0)

    @property
    def logit_bias(self) -> Tensor | None:
        return None

    @property
    def pad_token_id(self) -> int:
        return 0

    # --- shared ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def encode_image(self, pixels: Tensor, normalize: bool = True) -> Tensor:
        e = self.image.encode(pixels)
        return nn.functional.normalize(e, dim=-1) if normalize else e

    def encode_text(self, batch: TextBatch, normalize: bool = True) -> Tensor:
        e = self.text.encode(batch)
        return nn.functional.normalize(e, dim=-1) if normalize else e

    def denormalize(self, pixels: Tensor) -> Tensor:
        """Preprocessed pixels -> [0, 1] RGB for display."""
        from ..images import denormalize

        return denormalize(pixels, self.mean, self.std)

    def tower(self, modality: Modality) -> Tower:
        return self.image if modality == "image" else self.text


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Disable parameter gradients and dropout for the duration; restore flags and mode after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)
