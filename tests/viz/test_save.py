"""Written files respect the umask; long texts wrap in figures and token images."""

from __future__ import annotations

import pytest
import torch


# --- files respect the umask; long texts wrap --------------------------------------------------
def _explanation(words: list[str]):
    from vlexplain.attribution.base import Explanation

    g = torch.Generator().manual_seed(0)
    return Explanation(
        image_map=torch.rand(32, 32, generator=g),
        patch_map=torch.rand(2, 2, generator=g),
        token_scores=torch.rand(len(words), generator=g),
        tokens=words,
        score=0.25,
        method="m2ib",
        settings={},
        text=" ".join(words),
        pixels=torch.rand(3, 32, 32, generator=g),
    )


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_respect_the_umask(tmp_path, umask):
    import os

    from vlexplain.eval import io as rio
    from vlexplain.outdir import current_umask
    from vlexplain.viz.gallery import write_gallery
    from vlexplain.viz.save import save_explanation

    old = os.umask(umask)
    try:
        written = save_explanation(_explanation(["a", "cat"]), tmp_path / "x")
        written.append(str(write_gallery(tmp_path, [], "t", "s")))
        written.append(str(rio.atomic_write_text(tmp_path / "run" / "a.txt", "hi")))
        assert current_umask() == umask
    finally:
        os.umask(old)
    for p in written:
        assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask, p


def test_token_png_and_title_wrap_long_texts(tmp_path):
    from PIL import Image

    from vlexplain.viz.save import _token_lines, save_explanation, wrap_title

    assert _token_lines([1.0, 1.0, 1.0, 5.0, 1.0], room=3.0, gap=0.5) == [[0, 1], [2], [3], [4]]
    short = save_explanation(_explanation(["a", "cat"]), tmp_path / "s")
    words = ("a small brown dog runs across the green field near the old house " * 4).split()
    long = save_explanation(_explanation(words), tmp_path / "l")
    (ws, hs), (wl, hl) = (Image.open(p[2]).size for p in (short, long))
    assert wl <= 12 * 110 and hs == 99 and hl >= int((3 * 0.42 + 0.24) * 110)  # >= 3 lines, not clipped
    title = wrap_title(" ".join(words))
    assert all(len(line) <= 70 for line in title.splitlines()) and 2 < len(title.splitlines()) <= 6
    assert Image.open(long[0]).size[1] > Image.open(short[0]).size[1]  # the overlay grows for its title
