"""The explorer's work, free of any web framework: model cache, option parsing and runs."""

from __future__ import annotations

import ast
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..errors import InputError, MethodError
from ..models.base import DualEncoder

MAX_TEXTS = 8  # texts per request
MAX_TEXT_CHARS = 300  # characters per text


#: models a server keeps loaded unless told otherwise (each OpenCLIP ViT-B/32 takes ~600 MB)
DEFAULT_MAX_MODELS = 2


class ModelCache:
    """Loads model specs on demand and keeps the most recently used few; one lock per model.

    Methods attach hooks and toggle gradients on the shared model, so two requests must not run
    on the same model at once; requests on different models run in parallel.

    Args:
        loader: spec -> model (default [`vlexplain.load_model`][vlexplain.load_model]).
        max_models: the most models kept loaded; loading another first drops the least recently
            used one (a request still running on a dropped model keeps it until it finishes).
        allowed: the only specs that may be loaded (None: any spec); others are refused with
            [`InputError`][vlexplain.InputError] naming the allowed ones.
    """

    def __init__(
        self,
        loader: Callable[[str], DualEncoder] | None = None,
        max_models: int = DEFAULT_MAX_MODELS,
        allowed: Sequence[str] | None = None,
    ):
        if loader is None:
            from ..models.registry import load_model

            loader = load_model
        if max_models < 1:
            raise InputError(f"the server must keep at least one model loaded, got max_models={max_models}")
        self._loader = loader
        self.max_models = int(max_models)
        self.allowed = None if allowed is None else [a.strip() for a in allowed if a.strip()]
        if self.allowed is not None and not self.allowed:
            raise InputError("the list of allowed models is empty")
        self._models: OrderedDict[str, tuple[DualEncoder, threading.Lock]] = OrderedDict()
        self._load_lock = threading.Lock()

    def check(self, spec: str) -> str:
        """The cleaned spec, or [`InputError`][vlexplain.InputError] when it is empty or not allowed here."""
        spec = (spec or "").strip()
        if not spec:
            raise InputError("no model given: choose 'offline' or type a model spec")
        if self.allowed is not None and spec not in self.allowed:
            raise InputError(f"model {spec!r} is not offered by this server; choose one of: {', '.join(self.allowed)}")
        return spec

    def get(self, spec: str) -> tuple[DualEncoder, threading.Lock]:
        """The model for ``spec`` and its lock (loading it on first use, dropping the least recently used)."""
        spec = self.check(spec)
        with self._load_lock:
            if spec in self._models:
                self._models.move_to_end(spec)
                return self._models[spec]
            while len(self._models) >= self.max_models:  # make room before loading: memory stays bounded
                self._models.popitem(last=False)
                _release_memory()
            entry = (self._loader(spec), threading.Lock())
            self._models[spec] = entry
            return entry

    def loaded(self) -> list[str]:
        """The specs loaded now, least recently used first."""
        return list(self._models)

    def __contains__(self, spec: str) -> bool:
        return (spec or "").strip() in self._models


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def method_choices(model: DualEncoder) -> list[tuple[str, str]]:
    """(label, name) for every registered method that applies to ``model`` (read from the registry),
    then the bridged ones (``captum:<Algorithm>``) when their library is installed."""
    from ..attribution.base import methods_for

    out = []
    for name, sides in methods_for(model, bridged=True).items():
        out.append((name if len(sides) == 2 else f"{name} ({sides[0]} only)", name))
    return out


def method_options_help(names: Sequence[str]) -> str:
    """Markdown listing each method's summary, options and defaults (from the registry)."""
    from ..attribution.base import get_method

    lines = []
    for name in names:
        cls = get_method(name)
        sig = inspect.signature(cls.__init__)
        opts = [
            f"`{k}={p.default!r}`"
            for k, p in list(sig.parameters.items())[2:]
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        ]
        summary = f"{cls.summary}. " if cls.summary else ""
        lines.append(f"- **{name}**: {summary}Options: " + (", ".join(opts) if opts else "none"))
    return "\n".join(lines)


def parse_texts(raw: str) -> list[str]:
    """One text per non-empty line."""
    texts = [t.strip() for t in (raw or "").splitlines() if t.strip()]
    if not texts:
        raise InputError("type at least one text (one per line)")
    if len(texts) > MAX_TEXTS:
        raise InputError(f"at most {MAX_TEXTS} texts per run, got {len(texts)}")
    long = [t for t in texts if len(t) > MAX_TEXT_CHARS]
    if long:
        raise InputError(f"texts are limited to {MAX_TEXT_CHARS} characters; shorten: {long[0][:40]!r}...")
    return texts


def parse_options(raw: str, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``method.option=value`` lines -> {method: {option: value}} (values are Python literals)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for n, line in enumerate((raw or "").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, eq, value = line.partition("=")
        name, dot, opt = key.strip().partition(".")
        if not eq or not dot or not name or not opt.strip():
            raise InputError(f"option line {n} {line!r}: write method.option=value, e.g. m2ib.steps=5")
        if name not in out:
            continue  # options of a method that is not selected are ignored
        try:
            val = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            val = value.strip()
        out[name][opt.strip()] = val
    return out


@dataclass
class RunResult:
    """Explanations of one image against several texts by several methods."""

    texts: list[str]
    methods: list[str]
    model: str
    image_name: str
    # results[text index][method name] -> Explanation
    results: list[dict[str, Any]] = field(default_factory=list)

    def scores(self) -> list[float]:
        return [next(iter(r.values())).score for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "image": self.image_name,
            "texts": self.texts,
            "methods": self.methods,
            "scores": dict(zip(self.texts, self.scores())),
            "explanations": [self.results[i][m].to_dict() for i in range(len(self.texts)) for m in self.methods],
        }


def run(
    model: DualEncoder,
    image: Image.Image,
    texts: Sequence[str],
    methods: Sequence[str],
    options: dict[str, dict[str, Any]],
    seed: int = 0,
    image_name: str = "image",
    progress: Callable[[int, int, str], None] | None = None,
) -> RunResult:
    """Explain ``image`` against every text with every method (one ``explain`` call per method)."""
    from ..attribution.api import explain

    if not methods:
        raise MethodError("choose at least one method")
    texts = list(texts)
    res = RunResult(texts, list(methods), model.name, image_name, [{} for _ in texts])
    for k, m in enumerate(methods):
        if progress is not None:
            progress(k, len(methods), f"{m} ({k + 1}/{len(methods)})")
        exps = explain(model, image, texts, method=m, seed=seed, **options.get(m, {}))
        if not isinstance(exps, list):
            exps = [exps]
        for i, e in enumerate(exps):
            res.results[i][m] = e
    if progress is not None:
        progress(len(methods), len(methods), "done")
    return res
