"""The resumable, multi-process loop shared by the published-protocol benchmarks.

A protocol run directory holds::

    config.json                  what produced the results (a resume must find it unchanged)
    shards/stats-000000.npz      per shard of consecutive items, per method, the items' statistics
    results.json, leaderboard.md the dataset-level values with bootstrap intervals (rank 0, at the end)

A shard is written atomically, so it is finished exactly when its file exists; a killed run resumed
with ``--resume`` computes only the missing shards. Under ``accelerate launch`` / ``torchrun`` each
process takes the shards ``k % world_size == rank`` (the evaluation runner's scheme and barriers).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...interrupt import track
from .. import io as rio

SHARDS = "shards"
CONFIG = "config.json"


@dataclass
class ProtocolResult:
    """What a protocol benchmark produced."""

    out: Path
    results: Path  # results.json
    leaderboard: Path  # leaderboard.md
    markdown: str
    values: dict[str, dict[str, tuple[float, float, float]]]  # method -> metric -> (value, low, high)

    @property
    def reports(self) -> list[Path]:
        """What the command line names beside the leaderboard: the results file."""
        return [self.results]


def _shard_path(out: Path, k: int) -> Path:
    return out / SHARDS / f"stats-{k:06d}.npz"


#: what a protocol run writes in its folder (``--overwrite`` removes these and nothing else)
RUN_FILES = (CONFIG, SHARDS, "results.json", "leaderboard.md")


def prepare(out: Path, config: dict[str, Any], resume: bool, overwrite: bool = False) -> None:
    """Check the run directory against ``config`` (nothing is written here)."""
    from ...outdir import check_overwrite

    check_overwrite(resume, overwrite)
    cfg = out / CONFIG
    if resume:
        if not cfg.is_file():
            raise InputError(f"--resume: {out} holds no protocol run (no {CONFIG})")
        old = rio.read_json(cfg)
        if old != json.loads(json.dumps(config)):
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != json.loads(json.dumps(config.get(k))))
            raise InputError(f"--resume: {out} was run with other settings ({', '.join(diff)}); use another --out")
    elif overwrite:
        return
    elif out.exists() and any(out.iterdir()):
        what = "holds a protocol run" if cfg.is_file() else "is not empty"
        raise InputError(
            f"{out} {what}; pass --resume to continue it, --overwrite to replace it, or choose another --out"
        )


def run_protocol(
    out: str | os.PathLike,
    kind: str,
    ds: Any,
    spec: str,
    names: list[str],
    total: int,
    seed: int,
    opts: dict[str, Any],
    compute: Callable[[int], dict[str, np.ndarray]],
    reduce: Callable[..., Any],
    *,
    resume: bool,
    shard_size: int,
    progress: bool,
    overwrite: bool,
    **own: Any,
) -> tuple[Path, dict[str, Any], dict[str, dict[str, tuple[float, float, float]]]]:
    """A protocol kind's run: its config (the shared keys and the kind's ``own`` settings), its shards
    (``run_shards``) and each method's dataset values with bootstrap intervals (``reduce``).
    Returns (the run directory, the config, method -> metric -> (value, low, high))."""
    from .protocol_stats import bootstrap

    config = {
        "kind": kind,
        "data": ds.describe(),
        "model": spec,
        "methods": names,
        "n": total,
        "seed": seed,
        **own,
        "method_options": opts,
        "shard_size": shard_size,
    }
    outp = Path(out).expanduser()
    got = run_shards(
        outp,
        config,
        total,
        names,
        compute,
        resume=resume,
        shard_size=shard_size,
        progress=progress,
        overwrite=overwrite,
    )
    values = {m: bootstrap(rows, item, total, reduce, seed=seed) for m, (rows, item) in got.items()}
    return outp, config, values


def run_shards(
    out: Path,
    config: dict[str, Any],
    n: int,
    methods: Sequence[str],
    compute: Callable[[int], dict[str, np.ndarray]],
    *,
    resume: bool,
    shard_size: int,
    progress: bool,
    overwrite: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Compute ``compute(i)`` (method -> (rows, ...) statistics of item ``i``) for every item; returns
    method -> (all rows in item order, the item of each row), read back from the shard files."""
    from ..runner import _barrier, _release_group, dist_info

    rank, world = dist_info()
    prepare(out, config, resume, overwrite)
    _barrier(world)
    if rank == 0:
        if overwrite:
            from ...outdir import remove_run

            remove_run(out, RUN_FILES)
        (out / SHARDS).mkdir(parents=True, exist_ok=True)
        rio.remove_temporaries(out)
        rio.atomic_write_json(out / CONFIG, config)
    _barrier(world)
    n_shards = -(-n // shard_size)
    todo = [k for k in range(n_shards) if k % world == rank and not _shard_path(out, k).is_file()]
    _loop(out, n, todo, methods, compute, shard_size, progress and rank == 0)
    _barrier(world)
    rows: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    lens: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for k in range(n_shards):
        with np.load(_shard_path(out, k)) as z:
            for m in methods:
                rows[m].append(z[m])
                lens[m].append(z[f"{m}.len"])
    _barrier(world)
    _release_group()
    out_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in methods:
        ln = np.concatenate(lens[m])
        out_[m] = (np.concatenate(rows[m]), np.repeat(np.arange(len(ln)), ln))
    return out_


def _loop(out, n, todo, methods, compute, shard_size, show) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    items = sum(min(shard_size, n - k * shard_size) for k in todo)
    cols = (TextColumn("[bold]benchmark"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with (
        Progress(*cols, console=Console(stderr=True), disable=not show) as bar,
        track("images", n, done=n - items) as work,
    ):
        task = bar.add_task("images", total=items)
        for k in todo:
            rows: dict[str, list[np.ndarray]] = {m: [] for m in methods}
            for i in range(k * shard_size, min(n, (k + 1) * shard_size)):
                for m, v in compute(i).items():
                    rows[m].append(v)
                bar.advance(task)
                work.advance()
            arrays = {m: np.concatenate(v) for m, v in rows.items()}
            arrays.update({f"{m}.len": np.array([len(a) for a in v]) for m, v in rows.items()})
            _write_npz(_shard_path(out, k), arrays)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(data)

    rio.atomic_write(path, write)


def cell(v: tuple[float, float, float]) -> str:
    return f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"


def finish(
    out: Path, title: str, protocol: str, values: dict[str, dict[str, tuple[float, float, float]]], extra: dict
) -> ProtocolResult:
    """Write results.json and leaderboard.md (rank 0) and return them."""
    from ..runner import dist_info

    metrics = list(next(iter(values.values())))
    lines = [
        f"### {title}",
        "",
        protocol,
        "",
        "Cells: value over the dataset [95 % percentile bootstrap interval over images, 1000 resamples], in %.",
        "",
        "| method | " + " | ".join(f"{m} ↑" for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for meth, vals in sorted(values.items(), key=lambda kv: -kv[1][metrics[0]][0]):
        lines.append(f"| {meth} | " + " | ".join(cell(vals[m]) for m in metrics) + " |")
    md = "\n".join(lines) + "\n"
    res = {"values": {m: {k: list(v) for k, v in vs.items()} for m, vs in values.items()}, **extra}
    rank, _ = dist_info()
    if rank == 0:
        rio.atomic_write_json(out / "results.json", res)
        rio.atomic_write_text(out / "leaderboard.md", md)
    return ProtocolResult(out, out / "results.json", out / "leaderboard.md", md, values)
