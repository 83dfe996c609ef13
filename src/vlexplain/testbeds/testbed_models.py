"""Models trained on the project's own testbeds, and the ``testbed:`` model specs.

``vx.load_model("testbed:shapes")`` loads the small CLIP trained on the shapes world that ships in
``vlexplain/assets/shapes_clip`` (a transformers ``save_pretrained`` directory plus ``vocab.json``).
``testbed:shapes@DIR`` loads one trained with ``vlexplain testbed train-shapes --out DIR``.
``testbed:spurious`` loads the shipped model trained with a badge cue
(``vlexplain testbed train-shapes --spurious 0.9``, ``vlexplain/assets/spurious_clip``;
``vlexplain.testbeds.spurious``). ``register`` (called by the package root) adds these specs to
the model registry and the shapes-world CLIP to the families table: the model layer never imports
the testbeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import ModelLoadError
from ..models.base import DualEncoder
from ..models.families import Family, register_family
from ..models.registry import register_loader
from ..models.text import TokenizerSpec

SPECIALS = ("<pad>", "<unk>", "<sos>", "<eos>")  # ids 0..3
CONTEXT_LENGTH = 16


def assets_dir() -> Path:
    """Directory of the shipped shapes-world CLIP."""
    return Path(__file__).resolve().parent.parent / "assets" / "shapes_clip"


def spurious_dir() -> Path:
    """Directory of the shipped shapes-world CLIP trained with the badge cue (``testbed:spurious``)."""
    return assets_dir().parent / "spurious_clip"


def build_vocab(words: Sequence[str]) -> list[str]:
    """Token list: the special tokens, then the words (sorted, unique)."""
    return list(SPECIALS) + sorted(set(words) - set(SPECIALS))


def word_tokenizer(vocab: Sequence[str], context_length: int = CONTEXT_LENGTH) -> TokenizerSpec:
    """A word-level ``TokenizerSpec`` over ``vocab`` (unknown words map to ``<unk>``)."""
    from .shapes_categories import tokenize_words

    index = {w: i for i, w in enumerate(vocab)}
    unk = index["<unk>"]
    return TokenizerSpec(
        encode=lambda t: [index.get(w, unk) for w in tokenize_words(t)],
        decode_token=lambda i: vocab[int(i)],
        decode=lambda ids: " ".join(vocab[int(i)] for i in ids),
        sos_id=index["<sos>"],
        eos_id=index["<eos>"],
        pad_id=index["<pad>"],
        context_length=context_length,
        pool="eos",
    )


def load_vocab(directory: Path) -> list[str]:
    path = directory / "vocab.json"
    if not path.exists():
        raise ModelLoadError(f"{directory} has no vocab.json: not a shapes-world model directory")
    return list(json.loads(path.read_text())["tokens"])


def load_shapes_clip(directory: str | Path | None = None, name: str | None = None) -> DualEncoder:
    """Load a shapes-world CLIP directory (default: the shipped one) as a [`DualEncoder`][vlexplain.DualEncoder]
    (``name``: the model's name, default ``testbed:shapes[@DIR]``)."""
    from transformers import CLIPModel

    from ..models.hf_clip import HFDualEncoder

    d = Path(directory) if directory is not None else assets_dir()
    if not (d / "config.json").exists() or not (d / "model.safetensors").exists():
        raise ModelLoadError(
            f"no trained shapes-world model in {d} (config.json + model.safetensors); "
            "train one with: vlexplain testbed train-shapes --out DIR"
        )
    vocab = load_vocab(d)
    model = CLIPModel.from_pretrained(str(d)).eval()
    tok = word_tokenizer(vocab, model.config.text_config.max_position_embeddings)
    name = name or (f"testbed:shapes@{d}" if directory else "testbed:shapes")
    enc = HFDualEncoder(model, tokenizer=tok, name=name)
    return enc.eval()


def _load_testbed(spec: str) -> DualEncoder:
    name, _, where = spec[len("testbed:") :].partition("@")
    if name == "spurious" and not where:
        return load_shapes_clip(spurious_dir(), name="testbed:spurious")
    if name != "shapes":
        raise ModelLoadError(
            f"unknown testbed model {spec!r}; available: testbed:shapes, testbed:shapes@DIR, testbed:spurious"
        )
    return load_shapes_clip(where or None)


def _trained_dir(p: Path) -> str | None:
    """A directory written by ``vlexplain testbed train-shapes --out`` loads as ``testbed:shapes@DIR``."""
    return f"testbed:shapes@{p}" if (p / "vocab.json").exists() and (p / "train_config.json").exists() else None


def register() -> None:
    """Register the ``testbed:`` specs with the model registry and the shapes-world CLIP with the
    families table (the package root calls this; calling it again changes nothing)."""
    register_loader(
        "testbed:",
        "small CLIPs trained on the project's testbeds: testbed:shapes[@DIR], testbed:spurious",
        lambda: (assets_dir() / "model.safetensors").exists(),
        directory=_trained_dir,
    )(_load_testbed)
    register_family(
        Family(
            key="testbed-shapes",
            name="shapes-world CLIP (trained by vlexplain)",
            library="vlexplain",
            examples="testbed:shapes, testbed:shapes@DIR",
            tiny=load_shapes_clip,
            notes="a small transformers CLIPModel with a word tokenizer; ground-truth masks in the shapes testbed; M2IB and Grad-CAM at block round(10 n / 12) - 1 of n",
        )
    )
