"""The pieces every pair-data reader shares: rows, pairs, column names, captions, URLs, image bytes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError

#: column names tried, in this order, when no ``image_key`` is given (OpenCLIP CSVs use
#: ``filepath``; COCO ``file_name``; webdataset and img2dataset ``jpg`` / ``png``)
IMAGE_KEYS = (
    "image",
    "filepath",
    "file_name",
    "filename",
    "image_path",
    "img",
    "path",
    "jpg",
    "jpeg",
    "png",
    "webp",
    "url",
)
#: caption column names tried, in this order (OpenCLIP CSVs use ``title``)
CAPTION_KEYS = ("caption", "text", "title", "captions", "sentences", "txt")
BOX_KEYS = ("boxes", "bboxes", "bbox")
MASK_KEYS = ("mask",)


@dataclass
class PairRow:
    """One parsed row, before its image is opened.

    Attributes:
        index: 0-based position in the dataset (the sample id used by evaluation runs).
        caption: the text.
        image: an image path (absolute), an in-memory image, encoded image bytes, or a
            ``LazyBytes`` (a member of a tar shard).
        source: ``file:line`` (or ``dataset[index]``, ``shard.tar:key``) for messages.
        boxes: COCO ``[x, y, w, h]`` boxes in original-image pixels, or None.
        mask: a ground-truth mask: a PNG path, an image, a callable returning one, or None.
        extras: the row's other fields (e.g. ``cell_index`` for metrics that need it).
    """

    index: int
    caption: str
    image: Any
    source: str
    boxes: list[list[float]] | None = None
    mask: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pair:
    """A row with its image opened (or the reason it could not be)."""

    row: PairRow
    image: Image.Image | None = None
    mask: Image.Image | None = None
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> int:
        return self.row.index

    @property
    def caption(self) -> str:
        return self.row.caption


@dataclass(frozen=True)
class LazyBytes:
    """Bytes read on demand: ``size`` bytes at ``offset`` of ``path`` (an uncompressed tar member)."""

    path: str
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)


@dataclass(frozen=True)
class MissingImage:
    """Stands for a sample without an image; loading the pair reports ``why``."""

    why: str


@dataclass
class Columns:
    """Which fields hold what; None: found among the known names (see ``IMAGE_KEYS``...)."""

    image: str | None = None
    caption: str | None = None
    boxes: str | None = None
    mask: str | None = None

    def resolve(self, names: Sequence[str], where: str, need_image: bool = True, fixed: bool = True) -> Columns:
        """The columns of a table / dataset with fields ``names`` (case-insensitive).

        ``fixed``: every record has these fields (a table); otherwise (JSON Lines, where boxes and
        masks may appear on some records only) a named box / mask field need not be in ``names``.

        Raises:
            InputError: a named column is absent, or no known image / caption column exists; the
                message lists the columns found.
        """
        low = {n.lower(): n for n in names}
        found = ", ".join(names) if names else "none"

        def pick(given: str | None, known: Sequence[str], what: str, flag: str, required: bool) -> str | None:
            if given is not None:
                if given in names:
                    return given
                if given.lower() in low:
                    return low[given.lower()]
                raise InputError(f"{where}: no column {given!r} for the {what} (columns: {found})")
            for k in known:
                if k in low:
                    return low[k]
            if required:
                raise InputError(
                    f"{where}: no {what} column among the columns found ({found}); name it with "
                    f"{flag} (known names: {', '.join(known)})"
                )
            return None

        def optional(given: str | None, known: Sequence[str], what: str, flag: str) -> str | None:
            if given is not None and not fixed and given not in names:
                return given
            return pick(given, known, what, flag, given is not None)

        return Columns(
            pick(self.image, IMAGE_KEYS, "image", "--image-key", need_image),
            pick(self.caption, CAPTION_KEYS, "caption", "--caption-key", True),
            optional(self.boxes, BOX_KEYS, "boxes", "--box-key"),
            optional(self.mask, MASK_KEYS, "mask", "--mask-key"),
        )

    def renamed(self) -> dict[str, str]:
        """The fields read under another name than the default (for the run's description)."""
        default = {"image": "image", "caption": "caption", "boxes": "boxes", "mask": "mask"}
        return {k: v for k, v in vars(self).items() if v is not None and v != default[k]}


_URL = re.compile(r"^(?:https?|s3|gs|ftp|hf):/", re.IGNORECASE)  # one slash: a URL that went through Path()


def is_url(value: Any) -> bool:
    return isinstance(value, str) and _URL.match(value.strip()) is not None


def refuse_url(value: str, where: str, what: str = "the image") -> None:
    """One line: URLs are not fetched (no network access at run time)."""
    shown = re.sub(r"^(\w+):/(?!/)", r"\1://", value.strip())[:80]
    raise InputError(
        f"{where}: {what} is a URL ({shown}); vlexplain reads local files only "
        "(no network access at run time): download the images first (e.g. with img2dataset) and pass "
        "the local copy"
    )


def resolve(p: Any, base: Path, where: str = "") -> Any:
    """A path relative to ``base`` made absolute; URLs refused; anything else unchanged."""
    if not isinstance(p, str):
        return p
    if is_url(p):
        refuse_url(p, where or str(base))
    q = Path(p.strip()).expanduser()
    return str(q if q.is_absolute() else base / q)


def check_boxes(value: Any, where: str, key: str = "boxes") -> list[list[float]] | None:
    """COCO ``[x, y, w, h]`` boxes (a list of them, one box, or JSON text) -> list of float lists."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: {key!r} is not valid JSON ({e.msg})") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{where}: {key!r} must be a list of [x, y, w, h] boxes")
    if len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        value = [value]  # a single box
    out = []
    for b in value:
        if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(isinstance(v, (int, float)) for v in b):
            raise InputError(f"{where}: each box must be [x, y, w, h] (COCO, pixels), got {b!r}")
        if not all(math.isfinite(v) for v in b):
            raise InputError(f"{where}: box {list(b)} has a value that is not a finite number")
        if b[2] < 0 or b[3] < 0:
            raise InputError(f"{where}: box {list(b)} has a negative width or height")
        out.append([float(v) for v in b])
    return out


class Captions:
    """Turns a caption field (a string, or a list of captions) into the captions used.

    A list gives its first caption, or with ``all_captions`` one pair per caption; the first list
    seen adds a note (``notes``) saying which.
    """

    def __init__(self, all_captions: bool = False):
        self.all = all_captions
        self.notes: list[str] = []
        self.columns_used: dict[str, str] = {}  # fields read under another name than the default

    def __call__(self, value: Any, where: str, key: str) -> list[str]:
        if hasattr(value, "tolist") and not isinstance(value, str):
            value = value.tolist()
        if isinstance(value, (list, tuple)):
            caps = [c for c in value if c is not None]
            if not all(isinstance(c, str) for c in caps):
                raise InputError(f"{where}: {key!r} must hold text (a string or a list of strings)")
            if not self.notes:
                self.notes.append(
                    f"{key!r} holds lists of captions: "
                    + (
                        "one pair per caption (--all-captions)"
                        if self.all
                        else "the first caption of each is used (--all-captions: one pair per caption)"
                    )
                )
            if not caps:
                return [""]
            return list(caps) if self.all else [caps[0]]
        if not isinstance(value, str):
            raise InputError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
        return [value]


def expand(
    rows: Iterator[tuple[dict[str, Any], str]],
    cols: Columns,
    captions: Captions,
    base: Path,
    image: Callable[[Any, str], Any] | None = None,
) -> Iterator[PairRow]:
    """``(record, where)`` -> numbered ``PairRow`` (one per caption when lists are expanded).

    ``image(value, where)`` turns the image field into what ``PairRow`` holds (default: a path
    resolved against ``base``, URLs refused).
    """
    i = 0
    captions.columns_used = cols.renamed()
    ik, ck = cols.image or "image", cols.caption or "caption"  # (resolved columns are never None)
    bk, mk = cols.boxes or "boxes", cols.mask or "mask"
    for rec, where in rows:
        if not isinstance(rec, dict):
            raise InputError(f"{where}: expected an object with {ik!r} and {ck!r}, got {type(rec).__name__}")
        for key in (ik, ck):
            if key not in rec or rec[key] is None:
                raise InputError(f"{where}: missing {key!r}")
        img = rec[ik]
        if image is not None:
            img = image(img, where)
        else:
            if not isinstance(img, str) or not img.strip():
                raise InputError(f"{where}: {ik!r} must be a non-empty path")
            img = resolve(img, base, where)
        mask = rec.get(mk) or None
        if isinstance(mask, dict):  # a Hugging Face image struct
            mask = bytes(mask["bytes"]) if mask.get("bytes") is not None else (mask.get("path") or None)
        if isinstance(mask, str):
            mask = resolve(mask, base, where)
        boxes = check_boxes(rec.get(bk), where, bk)
        extras = {k: v for k, v in rec.items() if k not in (ik, ck, bk, mk)}
        caps = captions(rec[ck], where, ck)
        for j, cap in enumerate(caps):
            ex = {**extras, "caption_index": j} if len(caps) > 1 else extras
            yield PairRow(i, cap, img, where, boxes, mask, ex)
            i += 1


def open_bytes(data: bytes, where: str) -> Image.Image:
    """Encoded image bytes -> RGB image, through the one image reader (``vlexplain.images.open_image``)."""
    from ..images import open_image, to_rgb

    with open_image(data, "image", where) as im:
        return to_rgb(im)
