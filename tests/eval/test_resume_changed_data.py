"""``evaluate --resume``: the run identity includes the data's content, and says what changed."""

from __future__ import annotations

import pytest


# --- evaluate: the run identity includes the data's content -------------------------------------
def _pairs(d, captions):
    import json

    from PIL import Image

    (d / "img").mkdir(exist_ok=True)
    for i in range(len(captions)):
        if not (d / "img" / f"{i}.png").exists():
            Image.new("RGB", (40, 30), (40 * i, 90, 160)).save(d / "img" / f"{i}.png")
    f = d / "pairs.jsonl"
    f.write_text("".join(json.dumps({"image": f"img/{i}.png", "caption": c}) + "\n" for i, c in enumerate(captions)))
    return f


def test_resume_refuses_changed_data_and_says_what_changed(tmp_path, hf_clip):
    import os

    from vlexplain.errors import InputError
    from vlexplain.eval.runner import evaluate

    caps = ["a red square", "a blue sky", "a green field", "a cat"]
    data = _pairs(tmp_path, caps)
    out = tmp_path / "run"
    kw = dict(batch_size=2, shard_size=2, metric_options={"deletion_image": {"n_steps": 2}}, progress=False)
    evaluate(data, hf_clip, ["random"], ["deletion_image"], out, **kw)
    evaluate(data, hf_clip, ["random"], ["deletion_image"], out, resume=True, **kw)  # unchanged: resumes
    # the same number of rows, one caption edited: the first shard's rows and the file changed
    _pairs(tmp_path, ["a red circle"] + caps[1:])
    with pytest.raises(
        InputError,
        match=r"the data file pairs.jsonl changed; the rows \(captions, image paths, "
        r"boxes\) of samples 0-1 changed; start a new run",
    ):
        evaluate(data, hf_clip, ["random"], ["deletion_image"], out, resume=True, **kw)
    # captions restored, an image of the second shard rewritten (size or mtime)
    _pairs(tmp_path, caps)
    from PIL import Image

    Image.new("RGB", (41, 30)).save(tmp_path / "img" / "3.png")
    os.utime(tmp_path / "img" / "3.png", ns=(1, 1))
    with pytest.raises(InputError, match=r"the image files \(size or modification time\) of samples 2-3 changed"):
        evaluate(data, hf_clip, ["random"], ["deletion_image"], out, resume=True, **kw)


def test_resume_of_a_run_without_a_data_fingerprint_is_refused(tmp_path, hf_clip):
    import json

    from vlexplain.errors import InputError
    from vlexplain.eval.runner import evaluate

    data = _pairs(tmp_path, ["a", "b"])
    out = tmp_path / "run"
    kw = dict(batch_size=2, shard_size=2, metric_options={"deletion_image": {"n_steps": 2}}, progress=False)
    evaluate(data, hf_clip, ["random"], ["deletion_image"], out, **kw)
    cfg = json.loads((out / "config.json").read_text())
    assert set(cfg["data_identity"]) == {"files", "rows", "images"} and len(cfg["data_identity"]["rows"]) == 1
    del cfg["data_identity"]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="records no fingerprint of its data"):
        evaluate(data, hf_clip, ["random"], ["deletion_image"], out, resume=True, **kw)
