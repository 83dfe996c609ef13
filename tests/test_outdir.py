"""``--out``: existing files, unwritable places, one run at a time."""

from __future__ import annotations

import pytest


# --- --out: existing files, unwritable places, one run at a time -----------------------------------
def test_out_checks_and_folder_claim(tmp_path):
    from vlexplain.errors import InputError
    from vlexplain.outdir import check_out_dir, check_out_file, claim

    f = tmp_path / "a.txt"
    f.write_text("x")
    with pytest.raises(InputError, match="is an existing file; give a folder"):
        check_out_dir(f)
    with pytest.raises(InputError, match="a.txt is a file, not a folder"):
        check_out_dir(f / "sub" / "deeper")
    with pytest.raises(InputError, match="is a folder; give a file name"):
        check_out_file(tmp_path)
    with pytest.raises(InputError, match="cannot write in /proc"):
        check_out_dir("/proc/vlexplain-out")
    assert check_out_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # checked, not created
    c = claim(tmp_path / "run")
    with pytest.raises(InputError, match=r"being written by another vlexplain run \(process \d+\)"):
        claim(tmp_path / "run")
    c.release()
    claim(tmp_path / "run").release()  # free again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no lock file left
