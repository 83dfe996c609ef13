"""Concept sets: K short visual descriptors per class ("red crest", "black face mask").

A concept set is read from a JSON object ``{"class name": ["descriptor", ...], ...}``, from a CSV
file with ``class,descriptor`` rows (an optional header row) or from a Python mapping::

    cs = load_concepts("cub.json", k=5)
    cs.descriptors("Cardinal")            # ['red crest', ...]
    cs = cs.align(dataset.classes)        # keyed by the dataset's class names; errors list the gaps
"""

from __future__ import annotations

import csv
import difflib
import json
import re
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..models.base import DualEncoder

#: descriptors longer than this many words are rejected (published sets use 2-6 words)
MAX_WORDS = 12
#: default prompt of a class ("{class}") and of a concept ("{class}", "{descriptor}")
CATEGORY_TEMPLATE = "a photo of a {class}."
CONCEPT_TEMPLATE = "{class}, which has {descriptor}."


def normalize_name(name: str) -> str:
    """Key used to match class names across sources: NFKC, case folded, punctuation and ``_`` -> spaces.

    Letters, digits and combining marks of every script are kept ("Сорока" -> "сорока", "Pâté" ->
    "pâté", "北京鸭" stays); a name with none (only symbols, e.g. emoji) keys on its folded symbols.
    """
    name = unicodedata.normalize("NFKC", name).strip()
    name = re.sub(r"^\d+\.", "", name)  # CUB folder prefixes such as "017."
    name = name.replace("'", "").replace("\u2019", "").casefold()
    key = " ".join("".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in name).split())
    return key or " ".join(name.split())


def _norm_descriptor(d: str) -> str:
    return " ".join(d.lower().split()).strip(" .")


def _listing(items: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


@dataclass(frozen=True)
class ConceptSet:
    """Descriptors per class, in file order.

    Attributes:
        concepts: class name -> tuple of descriptors.
        source: where the set came from (a path or "dict"), for messages.
    """

    concepts: Mapping[str, tuple[str, ...]]
    source: str = "dict"

    @property
    def classes(self) -> list[str]:
        """Class names in file order."""
        return list(self.concepts)

    def __len__(self) -> int:
        return len(self.concepts)

    def __contains__(self, cls: object) -> bool:
        return cls in self.concepts

    def descriptors(self, cls: str, k: int | None = None) -> list[str]:
        """The first ``k`` descriptors of ``cls`` (all when ``k`` is None)."""
        if cls not in self.concepts:
            hint = difflib.get_close_matches(cls, self.classes, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise InputError(f"class {cls!r} is not in the concept set {self.source}{extra}")
        d = list(self.concepts[cls])
        return d if k is None else d[:k]

    def num_descriptors(self) -> tuple[int, int]:
        """(fewest, most) descriptors of any class."""
        n = [len(v) for v in self.concepts.values()]
        return min(n), max(n)

    def align(self, class_names: Sequence[str]) -> ConceptSet:
        """The set keyed by ``class_names`` (matched after ``normalize_name``), in their order.

        Raises:
            InputError: listing every class of ``class_names`` the set does not cover.
        """
        index = {normalize_name(c): c for c in self.concepts}
        out, missing = {}, []
        for name in class_names:
            key = normalize_name(name)
            if name in self.concepts:
                out[name] = self.concepts[name]
            elif key in index:
                out[name] = self.concepts[index[key]]
            else:
                missing.append(name)
        if missing:
            hints = []
            for m in missing[:3]:
                close = difflib.get_close_matches(normalize_name(m), list(index), n=1)
                if close:
                    hints.append(f"{m!r} ~ {index[close[0]]!r}")
            hint = f" (closest names in the set: {'; '.join(hints)})" if hints else ""
            raise InputError(
                f"the concept set {self.source} has no descriptors for {len(missing)} class(es) of the data: "
                f"{_listing(missing)}{hint}"
            )
        return ConceptSet(out, self.source)

    def check_context(self, model: DualEncoder, template: str = CONCEPT_TEMPLATE) -> None:
        """Raise InputError if any concept prompt is longer than the model's text context."""
        texts, owners = [], []
        for c, ds in self.concepts.items():
            for d in ds:
                texts.append(template.format(**{"class": c, "descriptor": d}))
                owners.append(f"{c}: {d}")
        too_long = []
        for start in range(0, len(texts), 256):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tb = model.tokenize(texts[start : start + 256])
            too_long += [owners[start + i] for i, cut in enumerate(tb.truncated) if cut]
        if too_long:
            raise InputError(
                f"{len(too_long)} concept prompt(s) of {self.source} exceed the model's text context: "
                f"{_listing(too_long, 3)}; shorten these descriptors"
            )

    def to_json(self, path: str | Path) -> None:
        """Write the set as ``{class: [descriptors]}`` JSON."""
        Path(path).write_text(json.dumps({c: list(d) for c, d in self.concepts.items()}, indent=1))


def validate(
    concepts: Mapping[str, Sequence[str]], source: str = "dict", max_words: int = MAX_WORDS
) -> dict[str, tuple[str, ...]]:
    """Check a raw mapping; returns it with whitespace-trimmed descriptors.

    Raises:
        InputError: naming every class with no descriptors, an empty descriptor, a duplicate
            descriptor (case and spacing ignored) or a descriptor of more than ``max_words`` words.
    """
    if not isinstance(concepts, Mapping) or not concepts:
        raise InputError(f"concept set {source} is empty or not a mapping of class -> descriptors")
    empty, dup, long_, bad = [], [], [], []
    out: dict[str, tuple[str, ...]] = {}
    for cls, ds in concepts.items():
        if not isinstance(cls, str) or not cls.strip():
            bad.append(repr(cls))
            continue
        if isinstance(ds, str) or not isinstance(ds, Sequence) or any(not isinstance(d, str) for d in ds):
            bad.append(cls)
            continue
        clean = tuple(" ".join(d.split()) for d in ds)
        if not clean or any(not d for d in clean):
            empty.append(cls)
        seen: set[str] = set()
        for d in clean:
            key = _norm_descriptor(d)
            if key in seen:
                dup.append(f"{cls}: {d}")
            seen.add(key)
            if len(d.split()) > max_words:
                long_.append(f"{cls}: {d[:40]}...")
        out[cls.strip()] = clean
    problems = []
    if bad:
        problems.append(f"entries that are not a class name with a list of strings: {_listing(bad)}")
    if empty:
        problems.append(f"classes with no descriptors or an empty descriptor: {_listing(empty)}")
    if dup:
        problems.append(f"duplicate descriptors within a class: {_listing(dup)}")
    if long_:
        problems.append(f"descriptors longer than {max_words} words: {_listing(long_)}")
    if problems:
        raise InputError(f"invalid concept set {source}: " + "; ".join(problems))
    return out


def _read_csv(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.reader(f)):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                raise InputError(f"{path}, row {n + 1}: expected 2 columns (class,descriptor), got {len(row)}")
            cls, d = row[0].strip(), row[1].strip()
            if n == 0 and cls.lower() in ("class", "category", "label") and d.lower() in ("descriptor", "concept"):
                continue  # header
            out.setdefault(cls, []).append(d)
    return out


def load_concepts(
    source: str | Path | Mapping[str, Sequence[str]],
    *,
    k: int | None = None,
    classes: Sequence[str] | None = None,
    model: DualEncoder | None = None,
    template: str = CONCEPT_TEMPLATE,
    max_words: int = MAX_WORDS,
) -> ConceptSet:
    """Read and validate a concept set.

    Args:
        source: a ``.json`` file, a ``.csv`` file (``class,descriptor`` rows) or a mapping.
        k: keep the first ``k`` descriptors of each class (the published DEAL runs use 5 of 6).
        classes: align to these class names (see ``ConceptSet.align``); classes of the data
            missing from the set raise InputError.
        model: also check that every concept prompt fits the model's text context.
        template: the concept prompt used for that check.
        max_words: longest descriptor allowed, in words.

    Returns:
        A validated ``ConceptSet``.
    """
    if isinstance(source, Mapping):
        raw, name = source, "dict"
    else:
        from ..files import check_input_file, read_text, utf8_errors

        path = Path(source)
        name = str(path)
        if not path.exists() and not path.is_symlink():
            raise InputError(f"concept set not found: {path}")
        check_input_file(path, "concept set")
        if path.suffix.lower() == ".csv":
            with utf8_errors(path, "concept set"):
                raw = _read_csv(path)
        else:
            try:
                raw = json.loads(read_text(path, "concept set"))
            except json.JSONDecodeError as e:
                raise InputError(f"concept set {path} is not valid JSON: {e}") from None
            if not isinstance(raw, dict):
                raise InputError(f"concept set {path} must be a JSON object {{class: [descriptors]}}")
    data = validate(raw, name, max_words)
    if k is not None:
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        data = {c: d[:k] for c, d in data.items()}
    cs = ConceptSet(data, name)
    if classes is not None:
        cs = cs.align(classes)
    if model is not None:
        cs.check_context(model, template)
    return cs
