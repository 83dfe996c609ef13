"""``evaluate``: explain a dataset of image-caption pairs with several methods and score the maps.

A run directory holds::

    config.json                  the resolved configuration (what produced the results)
    manifest.json                finished shards, sample counts, completeness
    shards/metrics-000000.parquet   one row per (sample, method): metrics, score, error reason
    maps/maps-000000.safetensors    (``save_maps``) the maps, token scores and the model's input image

Samples are grouped in shards of ``shard_size`` consecutive pairs (shard ``k`` holds samples
``[k * S, (k + 1) * S)``). A shard is the unit of work: its files are written atomically, maps
first and the metrics file last, so a shard is finished exactly when its metrics file exists. A run
killed at any moment and resumed recomputes only unfinished shards; as every shard is computed in
the same batches with the same seeds, the merged results equal those of an uninterrupted run.

Under ``accelerate launch`` / ``torchrun`` each process takes the shards with
``k % world_size == rank``; rank 0 writes the manifest after the others finish. (With accelerate,
``--cpu --num_processes N`` starts one process unless an MPI hostfile is configured;
``--multi_gpu --num_processes N`` starts N processes through torch.distributed.run, also on a
machine without GPUs.)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, VlexplainError
from ..interrupt import atomic, track
from . import io as rio
from .io import write_table
from .run_config import (
    EvalConfig,
    MetricInfo,
    _check_methods,
    _check_quantus_options,
    _check_scored,
    _jsonable,
    _model_and_spec,
    _prepare_dir,
    _resolve_device,
    check_run_args,
)

if TYPE_CHECKING:
    from ..attribution.base import Side


@dataclass
class _Ctx:
    cfg: EvalConfig
    model: Any
    ds: Any
    out: Path
    metric_fns: dict[str, MetricInfo]


# --- distributed ---------------------------------------------------------------------------
def dist_info() -> tuple[int, int]:
    """(rank, world_size) from the launcher's environment (torchrun / accelerate, MPI), (0, 1) otherwise."""
    env = os.environ

    def first(*names: str, default: str) -> int:
        for n in names:
            if env.get(n, "").strip():
                return int(env[n])
        return int(default)

    rank = first("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", default="0")
    world = first("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", default="1")
    if not 0 <= rank < world:
        raise InputError(f"bad launcher environment: rank {rank} with world size {world}")
    return rank, world


_DIST = {"owned": False}


def _barrier(world: int) -> None:
    """Wait for every process (a gloo group is created on first use when the launcher made none)."""
    if world <= 1:
        return
    import datetime

    import torch.distributed as dist

    if not dist.is_available():
        raise InputError("WORLD_SIZE > 1 but torch.distributed is not available")
    if not dist.is_initialized():
        rank, world = dist_info()
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        # ranks finish their shards at different times: wait long at the final barrier
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(days=7))
        _DIST["owned"] = True
    dist.barrier()


def _release_group() -> None:
    if _DIST["owned"]:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _DIST["owned"] = False


# --- main entry ----------------------------------------------------------------------------
def evaluate(
    data: Any,
    model_spec_or_model: Any,
    methods: Sequence[str],
    metrics: Sequence[str],
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    limit: int | None = None,
    resume: bool = False,
    save_maps: bool = False,
    method_options: dict[str, dict[str, Any]] | None = None,
    *,
    metric_options: dict[str, dict[str, Any]] | None = None,
    shard_size: int | None = None,
    seed: int = 0,
    target: str = "cosine",
    device: str | None = None,
    progress: bool = True,
    skip_missing: bool = False,
    overwrite: bool = False,
) -> Path:
    """Explain every pair of a dataset with each method, score the maps, write shards.

    Args:
        data: a path or ``PairDataset`` (see ``open_pairs``).
        model_spec_or_model: a model spec (see [`vlexplain.load_model`][vlexplain.load_model]) or a model.
        methods: attribution method names.
        metrics: metric names from [`vlexplain.metrics.list_metrics`][vlexplain.metrics.list_metrics].
        out_dir: the run directory.
        batch_size: pairs explained and scored together.
        limit: only the first ``limit`` pairs.
        resume: continue a run in ``out_dir`` (finished shards are kept).
        save_maps: also save maps, token scores and input images (safetensors).
        method_options: per method, keyword options passed to [`vlexplain.explain`][vlexplain.explain].
        metric_options: per metric, keyword options passed to the metric.
        shard_size: pairs per shard (default ``8 * batch_size``); rounded up to a multiple of ``batch_size``.
        seed: the run's seed; pair ``i`` is explained with ``pair_seed(seed, i)`` (its own seed).
        target: "cosine" or "logit".
        device: "cpu", "cuda", "cuda:1"... (under a multi-process launcher "cuda" means this
            process's local GPU).
        progress: show a progress bar (rank 0 only).
        skip_missing: run without the metrics whose ground truth no pair has (a warning names
            them) instead of refusing the run.
        overwrite: replace the run ``out_dir`` holds (its files are removed first) instead of
            refusing to write into it.

    Every argument, the data's rows and the methods' options (on this model) are checked before
    anything is written or the folder is claimed.

    Returns:
        The run directory (``problems.jsonl`` lists failed pairs, see ``vlexplain.eval.problems``).

    Raises:
        AllPairsFailedError: every pair failed (the run directory is written all the same).

    Example:
        >>> evaluate("pairs.jsonl", "offline", ["m2ib"], ["deletion_image"], "runs/a")
    """
    from ..data.pairs import open_pairs

    a = check_run_args(
        batch_size, limit, shard_size, target, seed, resume, overwrite, methods, metrics, method_options, metric_options
    )
    batch_size, limit, shard_size, seed = a["batch_size"], a["limit"], a["shard_size"], a["seed"]
    methods, metric_fns = a["methods"], a["metric_fns"]
    method_options, metric_options = a["method_options"], a["metric_options"]
    rank, world = dist_info()
    s = shard_size or 8 * batch_size
    s = -(-s // batch_size) * batch_size
    ds = open_pairs(data)
    model, spec = _model_and_spec(model_spec_or_model, _resolve_device(device, world))
    _check_methods(model, methods, method_options)  # captum: bridges included
    _check_quantus_options(metrics, metric_options)
    from . import problems

    n_total, have = problems.scan(ds, limit)  # validates every line before anything is written
    if n_total == 0 and limit != 0:
        raise InputError(
            f"{getattr(ds, 'path', 'the data')} holds no pairs (no rows after its header, or an empty file)"
        )
    if rank == 0:
        problems.announce(ds, n_total)  # what was read (split, notes) before the run starts
    metric_fns, skipped = problems.check_metrics(
        metric_fns, have, str(getattr(ds, "path", "the data")), skip_missing, show=rank == 0, n=n_total
    )
    metrics = list(metric_fns)
    metric_options = {k: v for k, v in metric_options.items() if k in metric_fns}
    _check_scored(model, list(methods), metric_fns, rank == 0)
    cfg = EvalConfig(
        ds.describe(),
        spec,
        list(methods),
        list(metrics),
        dict(method_options or {}),
        dict(metric_options or {}),
        batch_size,
        s,
        limit,
        n_total,
        seed,
        target,
        save_maps,
        str(model.device),
        {k: v.describe() for k, v in metric_fns.items()},
        world,
        skipped_metrics=skipped,
    )
    from .identity import data_identity

    cfg.data_identity = data_identity(ds, n_total, s)  # what a resume must find unchanged
    out = Path(out_dir).expanduser()
    from ..outdir import claimed

    with claimed(out):  # (no claim under a multi-process launcher: its processes share the folder)
        if rank == 0 or not overwrite:  # (with --overwrite, process 0 alone removes the old run)
            _prepare_dir(out, cfg, resume, overwrite)
        _barrier(world)  # every process checked the directory before anyone writes to it
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            rio.remove_temporaries(out)
            rio.atomic_write_json(out / rio.CONFIG, _jsonable(dataclasses.asdict(cfg)))
        _barrier(world)
        ctx = _Ctx(cfg, model, ds, out, metric_fns)
        _run_shards(ctx, n_total, rank, world, progress and rank == 0)
        _barrier(world)
        if rank == 0:
            write_manifest(out, n_total, s)
            problems.write_summary(out, n_total)  # problems.jsonl; counts in the manifest
        _barrier(world)
        _release_group()
    problems.raise_if_all_failed(out)
    return out


def write_manifest(out: Path, n_total: int, shard_size: int, done: dict[int, Path] | None = None) -> dict[str, Any]:
    """Write ``manifest.json`` from the shard files present (or the given finished shards)."""
    done = rio.finished_shards(out) if done is None else done
    n_shards = -(-n_total // shard_size) if shard_size else 0
    man = {
        "num_samples": n_total,
        "shard_size": shard_size,
        "num_shards": n_shards,
        "finished": [f"{rio.SHARD_DIR}/{p.name}" for p in done.values()],
        "missing": [k for k in range(n_shards) if k not in done],
        "complete": all(k in done for k in range(n_shards)),
    }
    rio.atomic_write_json(out / rio.MANIFEST, man)
    return man


def _shards(ds: Any, n_total: int, size: int) -> Iterator[tuple[int, list[Any]]]:
    buf: list[Any] = []
    for row in ds.rows():
        if row.index >= n_total:
            break
        buf.append(row)
        if len(buf) == size:
            yield row.index // size, buf
            buf = []
    if buf:
        yield buf[0].index // size, buf


def _run_shards(ctx: _Ctx, n_total: int, rank: int, world: int, show: bool) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    size = ctx.cfg.shard_size
    finished = rio.finished_shards(ctx.out)
    done = set(finished)
    mine = [k for k in range(-(-n_total // size)) if k % world == rank and k not in done]
    todo = sum(min(size, n_total - k * size) for k in mine)
    cols = (TextColumn("[bold]evaluate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    kept = sum(min(size, n_total - k * size) for k in done)
    with (
        Progress(*cols, console=Console(stderr=True), disable=not show, transient=False) as bar,
        track("pairs", n_total, done=kept) as work,
    ):  # what an interruption reports
        task = bar.add_task("pairs", total=todo)
        for k, rows in _shards(ctx.ds, n_total, size):
            if k % world != rank or k in done:
                continue
            path, records = _run_shard(ctx, k, rows)
            with atomic():  # the metrics file marks the shard finished: it and its count go together
                write_table(path, records, ctx.cfg.methods)
                finished[k] = path
                work.advance(len(rows))
            bar.advance(task, len(rows))
            if world == 1:
                write_manifest(ctx.out, n_total, size, finished)


def _run_shard(ctx: _Ctx, k: int, rows: list[Any]) -> tuple[Path, list[dict[str, Any]]]:
    """Explain and score a shard's rows and write its maps; returns (its metrics file, its records),
    the file still to be written (its existence marks the shard finished)."""
    records: list[dict[str, Any]] = []
    tensors: dict[str, Tensor] = {}
    meta: dict[str, str] = {}
    bs = ctx.cfg.batch_size
    for b in range(0, len(rows), bs):
        recs, ten, met = _run_batch(ctx, rows[b : b + bs])
        records += recs
        tensors.update(ten)
        meta.update(met)
    if ctx.cfg.save_maps:
        _write_maps(ctx.out / rio.MAPS_DIR / rio.maps_name(k), tensors, meta)
    return ctx.out / rio.SHARD_DIR / rio.shard_name(k), records


def _gt_mask(pair: Any, size: tuple[int, int]) -> Tensor | None:
    """(H, W) bool ground truth in the model's input frame (shortest-side resize + centre crop)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    if pair.mask is not None:
        m = F.resize(pair.mask, min(size), interpolation=InterpolationMode.NEAREST)
        m = F.center_crop(m, list(size))
        return torch.from_numpy(np.asarray(m) > 127)
    if pair.row.boxes is not None:
        from ..metrics.localization import boxes_to_masks

        w, h = pair.image.size
        return boxes_to_masks([pair.row.boxes], size, image_sizes=[(h, w)])[0]
    return None


def _base_record(pair: Any, method: str) -> dict[str, Any]:
    img = pair.row.image
    return {
        "index": pair.index,
        "method": method,
        "caption": pair.caption,
        "image": img if isinstance(img, str) else "",
        "error": pair.error,
    }


def pair_seed(seed: int, index: int) -> int:
    """The seed pair ``index`` of a run with seed ``seed`` is explained with.

    Each pair gets its own, so stochastic methods (the ``random`` reference, M2IB's noise, RISE's
    masks) draw independently for every pair instead of repeating one draw across the dataset, and
    a pair's seed does not depend on batching, sharding or the number of processes.
    """
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _run_batch(ctx: _Ctx, rows: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Tensor], dict[str, str]]:
    """Load, explain and score one batch; rows that fail become error rows with their reason."""
    pairs = [ctx.ds.load(r) for r in rows]
    recs = {(p.index, m): _base_record(p, m) for p in pairs for m in ctx.cfg.methods}
    tensors: dict[str, Tensor] = {}
    meta: dict[str, str] = {}
    ok = [p for p in pairs if p.error is None]
    try:
        _explain_batch(ctx, ok, recs, tensors, meta)
    except VlexplainError as e:
        if len(ok) == 1:  # this pair is the culprit
            _mark_error(recs, ok[0], ctx.cfg.methods, str(e))
        else:  # find the pair(s) that fail: one by one (deterministic, so resumes agree)
            for p in ok:
                try:
                    _explain_batch(ctx, [p], recs, tensors, meta)
                except VlexplainError as e1:
                    _mark_error(recs, p, ctx.cfg.methods, str(e1))
    return list(recs.values()), tensors, meta


def _mark_error(recs: dict[tuple[int, str], dict[str, Any]], pair: Any, methods: list[str], reason: str) -> None:
    for m in methods:
        recs[(pair.index, m)] = {**_base_record(pair, m), "error": f"{pair.row.source}: {reason}"}


def _explain_batch(
    ctx: _Ctx,
    ok: list[Any],
    recs: dict[tuple[int, str], dict[str, Any]],
    tensors: dict[str, Tensor],
    meta: dict[str, str],
) -> None:
    from ..attribution.api import explain

    if not ok:
        return
    model, cfg = ctx.model, ctx.cfg
    with torch.no_grad():
        px = torch.stack([model.preprocess(p.image) for p in ok]).to(model.device, model.dtype)
    caps = [p.caption for p in ok]
    texts = model.tokenize(caps)
    gts = [_gt_mask(p, tuple(model.input_size)) for p in ok]
    from .problems import empty_ground_truth

    gt_notes = empty_ground_truth(ok, gts)  # ground truth the crop cut away: warned, not scored
    out: dict[tuple[int, str], dict[str, Any]] = {}
    ten: dict[str, Tensor] = {}
    met: dict[str, str] = {}
    if cfg.save_maps:
        rgb = (model.denormalize(px) if hasattr(model, "denormalize") else px).clamp(0, 1)
        for p, im in zip(ok, rgb):
            ten[f"{p.index}.image"] = (im.float().cpu() * 255).round().to(torch.uint8).contiguous()
    seeds = [pair_seed(cfg.seed, p.index) for p in ok]
    for m in cfg.methods:
        exps = cast(
            "list[Any]",
            explain(
                model,
                px,
                caps,
                method=m,
                seed=seeds,
                target=cfg.target,  # a batch: a list
                batch_size=len(ok),
                sides=_sides_needed(ctx, m),
                **cfg.method_options.get(m, {}),
            ),
        )
        vals = _metrics_for(ctx, m, px, texts, exps, ok, gts)
        for j, (p, e) in enumerate(zip(ok, exps)):
            r = out[(p.index, m)] = dict(recs[(p.index, m)])
            r["score"] = float(e.score)
            if p.index in gt_notes:
                r["warning"] = gt_notes[p.index]
            r["seconds"] = float(e.seconds)
            for col, v in vals.items():
                r[col] = v[j]
            if cfg.save_maps:
                _collect_maps(ten, met, f"{p.index}.{m}", e)
    # nothing is recorded unless the whole batch succeeded
    recs.update(out)
    tensors.update(ten)
    meta.update(met)


def _collect_maps(tensors: dict[str, Tensor], meta: dict[str, str], key: str, e: Any) -> None:
    import json

    if e.image_map is not None:
        tensors[f"{key}.image_map"] = e.image_map.float().cpu().contiguous()
        tensors[f"{key}.patch_map"] = e.patch_map.float().cpu().contiguous()
    if e.token_scores is not None:
        tensors[f"{key}.token_scores"] = e.token_scores.float().cpu().contiguous()
        meta[f"{key}.tokens"] = json.dumps(list(e.tokens))


def _extra(
    info: MetricInfo,
    cfg: EvalConfig,
    method: str,
    pairs: list[Any],
    gts: list[Tensor | None],
    device: torch.device,
    size: tuple[int, int] | None = None,
) -> tuple[list[int], dict[str, Any]] | None:
    """(rows to score, keywords) for one metric, or None when it cannot be scored on this batch.

    ``masks`` come from the ground truth (rows without it are left out); ``method`` is the method
    being evaluated (with its seed and options); other required keywords are read from the rows'
    extra fields (e.g. ``cell_index`` and ``grid_n`` columns of a JSONL file).
    """
    idx = list(range(len(pairs)))
    kw: dict[str, Any] = {}
    for key in info.requires:
        if key == "masks":
            idx = [i for i in idx if gts[i] is not None]
        elif key == "method":
            kw.update(method=method, seed=cfg.seed, options=dict(cfg.method_options.get(method, {})))
        else:
            idx = [i for i in idx if key in pairs[i].row.extras]
    if not idx:
        return None
    for key in info.requires:
        if key == "masks":
            kw["masks"] = torch.stack([gts[i] for i in idx]).to(device)  # type: ignore[misc]
        elif key == "cue_mask":  # region masks: PNG paths relative to the pairs file, as the input's frame
            from ..metrics.cue import load_cue_masks

            base = Path(cfg.data.get("path", "."))
            base = base if base.is_dir() else base.parent
            paths = [pairs[i].row.extras[key] for i in idx]
            paths = [p if not p or Path(p).is_absolute() else str(base / p) for p in paths]
            kw[key] = load_cue_masks(paths, size or (0, 0), [pairs[i].image.size for i in idx]).to(device)
        elif key != "method":
            vals = [pairs[i].row.extras[key] for i in idx]
            if all(v == vals[0] for v in vals):
                kw[key] = vals[0]
            elif all(isinstance(v, (int, float)) for v in vals):
                kw[key] = torch.tensor(vals, device=device)
            else:  # labels (e.g. a group column): the list as it is
                kw[key] = list(vals)
    return idx, kw


def _sides_needed(ctx: _Ctx, method: str) -> list[Side] | None:
    """The sides a method must explain: those the metrics read (every side when maps are saved, or
    when a metric takes either side). None: every side the method applies to."""
    from ..attribution.base import get_method

    wanted = {info.side for info in ctx.metric_fns.values()}
    if ctx.cfg.save_maps or None in wanted:
        return None
    cls = get_method(method)
    sides: tuple[Side, Side] = ("image", "text")
    chosen = [s for s in sides if s in wanted and cls.why_not(ctx.model, s) is None]
    return chosen or None


def _metrics_for(
    ctx: _Ctx, method: str, px: Tensor, texts: Any, exps: list[Any], pairs: list[Any], gts: list[Tensor | None]
) -> dict[str, list[Any]]:
    """Column name -> one value per pair (float, list of floats for curves, or None).

    A metric of a side the method does not explain (a text metric for an image-only method), or
    one that needs ground truth no pair of the batch has, leaves its columns empty (null).
    """
    from ..metrics import token_maps_from_explanations

    n = len(exps)
    image_maps = torch.stack([e.image_map.float() for e in exps]) if exps[0].image_map is not None else None
    native = torch.stack([e.native_map.float() for e in exps]) if exps[0].image_map is not None else None
    token_maps = token_maps_from_explanations(exps, texts) if exps[0].token_scores is not None else None
    out: dict[str, list[Any]] = {}
    for name, info in ctx.metric_fns.items():
        if (info.side == "image" and image_maps is None) or (info.side == "text" and token_maps is None):
            continue
        got = _extra(info, ctx.cfg, method, pairs, gts, px.device, (int(px.shape[-2]), int(px.shape[-1])))
        if got is None:
            continue
        idx, kw = got
        sel = None if len(idx) == n else idx

        def pick(t: Any, sel: list[int] | None = sel) -> Any:
            return t if (t is None or sel is None) else t[sel]

        res = info.fn(
            ctx.model,
            pick(px),
            texts if sel is None else texts.select(sel),
            pick(native if info.native_maps else image_maps),
            pick(token_maps),
            **kw,
            **ctx.cfg.metric_options.get(name, {}),
        )
        for key, val in res.items():
            col = (
                name if len(res) == 1 or key == name else f"{name}.{key}"
            )  # the output named like the metric: its column
            vals: list[Any] = [None] * n
            if isinstance(val, Tensor):
                t = val.detach().float().cpu()
                for jj, i in enumerate(idx):
                    vals[i] = t[jj].tolist()
            else:  # labels shared by the batch (e.g. the stages of a sanity check)
                for i in idx:
                    vals[i] = [str(v) for v in val] if isinstance(val, (list, tuple)) else str(val)
            out[col] = vals
    return out


def _write_maps(path: Path, tensors: dict[str, Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    rio.atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta or None))
