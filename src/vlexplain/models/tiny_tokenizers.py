"""Small tokenizers in the layouts of real families' own, built offline for the tiny models.

The tiny random-weight models of the families table need tokenizers whose special tokens sit where
the real checkpoints' do (XLM-R's ``<s>=0 <pad>=1 </s>=2``, BERT's ``[PAD]=0 [UNK]=100 [CLS]=101
[SEP]=102``, a SentencePiece BPE without start or end token), so that the tests exercise the same
pooling and padding rules. Their vocabularies hold a few dozen English words, one token each;
other words map to the unknown token. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

#: the words of the tiny vocabularies (those of the tests' texts and of common prompts)
WORDS: tuple[str, ...] = tuple(
    "a an the photo picture of on in with and two three small big red blue green black white cat cats "
    "dog dogs bird car floor mat grass sleeping sitting running tree house person man woman".split()
)


def xlm_tokenizer(words: tuple[str, ...] = WORDS) -> Any:
    """An XLM-R-layout tokenizer (``<s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4``, then one piece per word):
    MetaCLIP 2's and NLLB's layout."""
    from transformers import XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    vocab += [(f"▁{w}", -1.0) for w in words]
    return XLMRobertaTokenizer(vocab=vocab)


def nllb_tokenizer(words: tuple[str, ...] = WORDS) -> Any:
    """An NLLB-200-layout tokenizer (``<s>=0 <pad>=1 </s>=2 <unk>=3``, the words, then the language
    codes ``eng_Latn`` and ``fra_Latn`` and ``<mask>``): a text is ``eng_Latn ... </s>``, the
    source-language code first, as NLLB-CLIP's tokenizer lays it out."""
    from transformers import NllbTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    merges: Any = bpe_merges(words, vocab)  # pairs, as the tokenizers library takes them
    for extra in ("eng_Latn", "fra_Latn", "<mask>"):
        vocab[extra] = len(vocab)
    return NllbTokenizer(
        vocab=vocab,
        merges=merges,
        src_lang="eng_Latn",
        extra_special_tokens=["eng_Latn", "fra_Latn"],
    )


def bert_tokenizer(words: tuple[str, ...] = WORDS) -> Any:
    """An uncased WordPiece tokenizer in bert-base-uncased's layout (``[PAD]=0``, ``[UNK]=100``,
    ``[CLS]=101``, ``[SEP]=102``, ``[MASK]=103``, unused rows between), then the words."""
    from transformers import BertTokenizer

    specials = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    vocab = {specials.get(i, f"[unused{i}]"): i for i in range(104)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    return BertTokenizer(vocab=vocab)


def bpe_merges(words: tuple[str, ...], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges that build each ``▁word`` from its characters (characters and pieces added to ``vocab``)."""
    merges: list[tuple[str, str]] = []
    for w in (f"▁{w}" for w in words):
        for c in w:
            vocab.setdefault(c, len(vocab))
        cur = w[0]
        for c in w[1:]:
            if (cur, c) not in merges:
                merges.append((cur, c))
            cur += c
            vocab.setdefault(cur, len(vocab))
    return merges


def sentencepiece_tokenizer(words: tuple[str, ...] = WORDS) -> Any:
    """A lower-casing SentencePiece BPE tokenizer with no start or end token (``<pad>=0 <unk>=1``):
    TIPSv2's layout."""
    from transformers import Tipsv2Tokenizer

    vocab = {"<pad>": 0, "<unk>": 1}
    merges = bpe_merges(words, vocab)
    return Tipsv2Tokenizer(vocab=vocab, merges=merges)
