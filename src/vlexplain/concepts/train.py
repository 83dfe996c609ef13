"""DEAL fine-tuning: prediction loss + disentangle and localize losses on concept explanations.

The explanation losses are differentiable through the explanations (``create_graph=True``), so
they train the model; weights stay in fp32 (bf16 autocast on CUDA only); the run checkpoints
(safetensors for the model, ``torch.save`` for the optimizer, read back with
``weights_only=True``), resumes from its last checkpoint, logs every loss to ``log.csv`` (and to
TensorBoard when installed), and stops on a NaN or exploding loss keeping the last good
checkpoint. The same script runs under ``accelerate launch``: process ``r`` of ``N`` takes the
``r``-th slice of the global batch of ``N * batch_size`` images that a single process would draw,
gradients and logged losses are averaged across processes, and process 0 alone writes. Every loss
is a mean over images (``prediction="contrastive"`` excepted: it contrasts within each process's
slice), so an N-process run equals a 1-process run with an N times larger batch.

Example:
    >>> result = deal_train(model, cub("CUB_200_2011"), load_concepts("cub.json", k=5), "runs/deal", steps=5000)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..distributed import average_gradients
from ..errors import InputError
from ..interrupt import atomic, track
from ..models.base import DualEncoder
from .losses import DealLosses, PredictionLoss, deal_losses
from .relevance import Templates
from .sets import ConceptSet

LOG_FIELDS = ("step", "total", "prediction", "disentangle", "localize", "lr", "grad_norm", "seconds")
CKPT = "checkpoint"


@dataclass
class DealConfig:
    """Settings of a DEAL run (saved as ``config.json`` beside the run's outputs)."""

    steps: int = 5000  # optimiser steps
    lr: float = 5e-7  # AdamW learning rate (published)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (published)
    eps: float = 1e-6  # AdamW epsilon (published)
    weight_decay: float = 1e-3  # AdamW weight decay (published)
    batch_size: int = 32  # images per step and process
    lambda_sep: float = 0.1  # weight of the disentangle loss (published)
    lambda_con: float = 0.01  # weight of the localize loss (published)
    prediction: PredictionLoss = "classes"  # "classes" (CE over all class prompts), "contrastive", "none"
    k: int | None = 5  # descriptors per class (the released code uses the first 5)
    category_template: str = Templates.category  # class prompt
    concept_template: str = Templates.concept  # concept prompt
    freeze_text: bool = False  # keep the text tower fixed
    freeze_image: bool = False  # keep the image tower fixed
    image_blocks: int | None = None  # train only the image tower's last N blocks (stem, earlier blocks, head fixed)
    train_logit_scale: bool = False  # let the logit scale (and bias) train
    max_grad_norm: float | None = None  # clip the gradient norm (None: no clipping, as published)
    save_every: int = 500  # checkpoint every this many steps (and at the end)
    seed: int = 0  # data order
    amp: bool = True  # bf16 autocast on CUDA (never on CPU)
    explode_factor: float = 20.0  # stop if the loss exceeds this multiple of its running mean
    explode_warmup: int = 10  # steps before the explosion test starts
    # a running mean below this counts as this: a loss that has converged near 0 (a noisy batch of
    # 0.14 against a mean of 0.003) is not an explosion; with the factor 20, nothing under 1 is
    explode_floor: float = 0.05
    tensorboard: bool = True  # also log to TensorBoard when it is installed

    @property
    def templates(self) -> Templates:
        return Templates(self.category_template, self.concept_template)

    def check(self) -> None:
        """Every setting a finite number in its range (InputError naming the option otherwise)."""
        from ..validate import check_number as num

        num(self.steps, "--steps", integer=True, lo=1)
        num(self.lr, "--lr", lo=0, lo_open=True)
        num(self.eps, "eps", lo=0, lo_open=True)
        num(self.weight_decay, "--weight-decay", lo=0)
        num(self.batch_size, "--batch-size", integer=True, lo=1)
        num(self.lambda_sep, "--lambda-sep", lo=0)
        num(self.lambda_con, "--lambda-con", lo=0)
        num(self.save_every, "--save-every", integer=True, lo=1)
        num(self.seed, "--seed", integer=True, lo=0, hi=2**63 - 1)
        num(self.explode_factor, "explode_factor", lo=1)
        for b in self.betas:
            num(b, "betas", lo=0, hi=1)
        if self.k is not None:
            num(self.k, "--k", integer=True, lo=1)
        if self.image_blocks is not None:
            num(self.image_blocks, "--image-blocks", integer=True, lo=1)
        if self.max_grad_norm is not None:
            num(self.max_grad_norm, "max_grad_norm", lo=0, lo_open=True)
        if self.prediction not in ("classes", "contrastive", "none"):
            raise InputError(f"--prediction {self.prediction!r}: use classes, contrastive or none")


#: settings a continued run must share with the run whose checkpoint it loads (``steps`` may grow)
IDENTITY = (
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "global_batch_size",
    "lambda_sep",
    "lambda_con",
    "prediction",
    "k",
    "category_template",
    "concept_template",
    "freeze_text",
    "freeze_image",
    "image_blocks",
    "train_logit_scale",
    "max_grad_norm",
    "seed",
    "data",
    "classes",
    "images",
    "concepts_digest",
    "world_size",
)


def check_continuation(out: Path, new: dict[str, Any]) -> None:
    """Refuse to continue the run in ``out`` with other settings, data or concepts than it was
    trained with (its ``config.json``); keys an older run did not record are not compared."""
    path = out / "config.json"
    if not path.is_file():
        return
    again = "rerun with its options, pass --overwrite to start over, or choose another --out"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError
    except (OSError, ValueError):
        raise InputError(f"cannot continue the run in {out}: its config.json is unreadable; {again}") from None
    now = json.loads(json.dumps(new, default=str))
    diff = [k for k in IDENTITY if k in old and k in now and old[k] != now[k]]
    if diff:
        shown = "; ".join(f"{k} {_brief(old[k])} there, {_brief(now[k])} here" for k in diff[:3])
        raise InputError(f"cannot continue the run in {out}: it was trained with other settings ({shown}); {again}")


def _brief(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


@dataclass
class TrainResult:
    """What a run did: the last step reached, why it stopped, where its checkpoint is."""

    step: int
    stopped: str  # "done", or the reason the run stopped early
    checkpoint: Path | None
    last_losses: dict[str, float]  # the last step's losses, averaged over processes
    world_size: int = 1  # processes that trained together
    main: bool = True  # False on every process but the one that writes (rank 0)


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Indices of one process's batch at ``step``: slices of a stream of seeded permutations.

    The stream is ``randperm(n, seed + epoch)`` concatenated over epochs, so a resumed run draws
    exactly the batches it would have drawn without the interruption.
    """
    start = (step * world + rank) * batch_size
    out: list[int] = []
    perm_epoch, perm = -1, None
    for p in range(start, start + batch_size):
        e = p // n
        if e != perm_epoch:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e)).tolist()
            perm_epoch = e
        out.append(perm[p % n])  # type: ignore[index]
    return out


def _load_batch(model: DualEncoder, dataset: Any, idx: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    ims, labels = [], []
    for i in idx:
        im, y = dataset[i]
        if not isinstance(im, Tensor):
            im = model.preprocess(im)
        ims.append(im)
        labels.append(int(y))
    return torch.stack(ims).to(device, torch.float32), torch.tensor(labels, device=device)


class _Dist:
    """Accelerate when installed (multi-process aware), else a single-process stand-in."""

    def __init__(self, device: torch.device):
        try:
            from accelerate import Accelerator

            self.acc: Any = Accelerator(cpu=device.type == "cpu")
        except ImportError:
            self.acc = None
        self.rank = self.acc.process_index if self.acc is not None else 0
        self.world = self.acc.num_processes if self.acc is not None else 1
        # one process keeps the model's own device (e.g. cuda:1); launched processes get theirs
        self.device = self.acc.device if self.world > 1 else device
        self.main = self.rank == 0

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Replace every gradient by its mean over processes (one all-reduce per bucket)."""
        if self.world > 1:
            average_gradients(params, lambda t: self.acc.reduce(t, reduction="mean"))

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over processes (a NaN on any process makes it NaN)."""
        if self.world == 1:
            return values
        t = self.acc.reduce(
            torch.tensor(list(values.values()), dtype=torch.float64, device=self.device), reduction="mean"
        )
        return dict(zip(values, (float(v) for v in t.tolist())))

    def agree(self, flag: bool) -> bool:
        """True if ``flag`` holds on any process."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.acc.reduce(t, reduction="sum").item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            self.acc.wait_for_everyone()


def save_checkpoint(out_dir: Path, model: DualEncoder, opt: torch.optim.Optimizer, step: int) -> Path:
    """Write ``out_dir/checkpoint`` (model.safetensors, optimizer.pt, state.json) atomically."""
    from safetensors.torch import save_model

    final, tmp, old = out_dir / CKPT, out_dir / (CKPT + ".tmp"), out_dir / (CKPT + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "step": step}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(out_dir: str | Path) -> Path | None:
    """The run's last complete checkpoint folder, if any."""
    out_dir = Path(out_dir)
    for name in (CKPT, CKPT + ".old"):
        c = out_dir / name
        if (c / "state.json").is_file() and (c / "model.safetensors").is_file():
            return c
    return None


def load_checkpoint(path: str | Path, model: DualEncoder, opt: torch.optim.Optimizer | None = None) -> int:
    """Load a checkpoint folder into ``model`` (and ``opt``); returns its step."""
    from safetensors.torch import load_model

    path = Path(path)
    again = "pass --overwrite to start over, or choose another --out"
    try:
        load_model(model, str(path / "model.safetensors"), strict=True, device=str(model.device))
        state = torch.load(path / "optimizer.pt", weights_only=True, map_location=model.device)
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no step count in optimizer.pt")
    except Exception as e:  # a truncated file, a foreign or code-carrying pickle (refused by weights_only)
        from ..models.registry import load_failure

        raise InputError(f"cannot load the checkpoint in {path}: {load_failure(e)}; {again}") from None
    if opt is not None:
        try:
            opt.load_state_dict(state["optimizer"])
        except ValueError as e:
            raise InputError(
                f"the optimizer state in {path} does not match this run's trainable parameters ({e}); "
                "use the same freeze settings or start a new output folder"
            ) from None
    return int(state["step"])


class _Log:
    """``log.csv`` (rows after ``start`` dropped on resume) and optional TensorBoard."""

    def __init__(self, out_dir: Path, start: int, tensorboard: bool, fields: Sequence[str] = LOG_FIELDS):
        self.path = out_dir / "log.csv"
        self.fields = tuple(fields)
        rows = []
        if self.path.is_file() and start > 0:
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                pass

    def write(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"deal/{k}", v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _trainable(model: DualEncoder, cfg: DealConfig) -> list[torch.nn.Parameter]:
    frozen = {id(p) for p in model.text.parameters()} if cfg.freeze_text else set()
    if cfg.freeze_image:
        frozen |= {id(p) for p in model.image.parameters()}
    elif cfg.image_blocks is not None:
        try:
            blocks = model.image.block_modules()
        except NotImplementedError as e:
            raise InputError(f"image_blocks: {e}") from None
        if not 1 <= cfg.image_blocks <= len(blocks):
            raise InputError(
                f"image_blocks must be 1..{len(blocks)} (the image tower's blocks), got {cfg.image_blocks}"
            )
        tail = {id(p) for b in blocks[len(blocks) - cfg.image_blocks :] for p in b.parameters()}
        frozen |= {id(p) for p in model.image.parameters()} - tail  # stem, earlier blocks, head
    out = []
    for name, p in model.named_parameters():
        scale = name.rsplit(".", 1)[-1] in ("logit_scale", "logit_bias")
        if id(p) in frozen or (scale and not cfg.train_logit_scale):
            p.requires_grad_(False)
        if p.requires_grad:
            out.append(p)
    if not out:
        raise InputError("nothing to train: every parameter of the model is frozen")
    return out


def deal_train(
    model: DualEncoder,
    dataset: Any,
    concepts: ConceptSet,
    out_dir: str | Path,
    steps: int = 5000,
    lr: float = 5e-7,
    batch_size: int = 32,
    lambda_sep: float = 0.1,
    lambda_con: float = 0.01,
    freeze_text: bool = False,
    resume: bool = True,
    progress: bool = True,
    losses_fn: Callable[..., DealLosses] | None = None,
    **options: Any,
) -> TrainResult:
    """Fine-tune ``model`` in place with the DEAL losses.

    Args:
        model: the dual encoder to train (moved to fp32 on the training device).
        dataset: items ``(image, label)`` (PIL images or preprocessed tensors) with ``.classes``.
        concepts: the concept set; aligned to ``dataset.classes`` (missing classes raise InputError).
        out_dir: where ``config.json``, ``log.csv`` and ``checkpoint/`` go.
        steps, lr, batch_size, lambda_sep, lambda_con, freeze_text: see ``DealConfig``.
        resume: continue from ``out_dir/checkpoint`` when it exists.
        progress: show a progress bar.
        losses_fn: replaces the DEAL losses: ``losses_fn(model, pixels, labels, indices)`` returns the
            batch's ``DealLosses`` (``indices``: the batch's dataset items); the names of its
            ``extra`` terms, listed in its ``fields`` attribute, are logged too. The rest of the
            run (data order, optimiser, checkpoints, logging) is the same.
        **options: any other ``DealConfig`` field (betas, eps, weight_decay, prediction, k, ...).

    Returns:
        A ``TrainResult``; ``stopped`` names the reason when the run stopped early.
    """
    fields = {f.name for f in dataclasses.fields(DealConfig)}
    unknown = set(options) - fields
    if unknown:
        raise InputError(f"unknown DEAL option(s): {', '.join(sorted(unknown))}")
    cfg = DealConfig(
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        lambda_sep=lambda_sep,
        lambda_con=lambda_con,
        freeze_text=freeze_text,
        **options,
    )
    cfg.check()
    classes = list(getattr(dataset, "classes", []) or [])
    if not classes or len(dataset) == 0:
        raise InputError("the dataset is empty or has no .classes")
    concepts = concepts.align(classes)
    if cfg.k is not None:
        concepts = ConceptSet({c: d[: cfg.k] for c, d in concepts.concepts.items()}, concepts.source)
    concepts.check_context(model, cfg.concept_template)
    out = Path(out_dir)
    info = _run_info(dataset, classes, concepts)
    if resume and find_checkpoint(out) is not None:
        from ..eval.runner import dist_info

        # the batch a step trains on is the global one: two processes of 2 continue one process of 4
        world = dist_info()[1]
        check_continuation(out, {**dataclasses.asdict(cfg), **info, "global_batch_size": cfg.batch_size * world})
    from ..outdir import claimed

    with claimed(out):
        return _train_claimed(model, dataset, classes, concepts, cfg, out, progress, resume, info, losses_fn)


def _run_info(dataset: Any, classes: list[str], concepts: ConceptSet) -> dict[str, Any]:
    """What a run was trained on (saved in config.json and compared when it is continued)."""
    import hashlib

    sets = {c: list(concepts.concepts[c]) for c in classes if c in concepts.concepts}
    info: dict[str, Any] = {
        "classes": len(classes),
        "images": len(dataset),
        "concepts_digest": hashlib.sha256(json.dumps(sets, sort_keys=True).encode()).hexdigest()[:16],
    }
    if callable(getattr(dataset, "describe", None)):  # the data read: layout, split, split rule
        info["data"] = dataset.describe()
    return info


def _train_claimed(model, dataset, classes, concepts, cfg, out, progress, resume, info, losses_fn=None) -> TrainResult:
    out.mkdir(parents=True, exist_ok=True)
    from ..eval.runner import dist_info

    if not resume and dist_info()[0] == 0:  # --overwrite / --fresh: no earlier checkpoint or log is kept
        from ..outdir import remove_run

        remove_run(out, (CKPT, CKPT + ".old", CKPT + ".tmp", "log.csv", "config.json", "stopped.json"))
    dist = _Dist(model.device)
    if model.dtype != torch.float32:
        model.float()  # fp32 master weights: 5e-7 steps round away in fp16
    model.to(dist.device).eval()  # no dropout; normalisation statistics stay fixed
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        params = _trainable(model, cfg)
        return _run(model, dataset, classes, concepts, cfg, out, dist, params, progress, resume, info, losses_fn)
    finally:
        for p, f in flags:  # freeze_text / logit-scale freezing last only as long as the run
            p.requires_grad_(f)


def _run(
    model, dataset, classes, concepts, cfg, out, dist, params, progress, resume, info, losses_fn=None
) -> TrainResult:
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    start, ckpt = 0, find_checkpoint(out) if resume else None
    if ckpt is not None:
        start = load_checkpoint(ckpt, model, opt)
    if dist.main:
        (out / "stopped.json").unlink(missing_ok=True)
        info = {**info, "world_size": dist.world, "global_batch_size": cfg.batch_size * dist.world}
        (out / "config.json").write_text(json.dumps({**dataclasses.asdict(cfg), **info}, indent=1))
    fields = LOG_FIELDS[:5] + tuple(getattr(losses_fn, "fields", ())) + LOG_FIELDS[5:]
    log = _Log(out, start, cfg.tensorboard, fields) if dist.main else None
    try:
        with track("steps", cfg.steps, done=start, resume="rerun (without --overwrite) to continue") as work:
            return _loop(
                model,
                dataset,
                classes,
                concepts,
                cfg,
                out,
                dist,
                params,
                opt,
                start,
                ckpt,
                log,
                progress,
                work,
                losses_fn,
            )
    finally:
        if log is not None:
            log.close()


def _loop(
    model, dataset, classes, concepts, cfg, out, dist, params, opt, start, ckpt, log, progress, work, losses_fn=None
) -> TrainResult:
    use_amp = cfg.amp and dist.device.type == "cuda"
    ema: float | None = None
    last: dict[str, float] = {}
    stopped = "done"
    bar = _progress(progress and dist.main, cfg.steps, start)
    step = completed = start
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            idx = batch_indices(len(dataset), cfg.batch_size, step, cfg.seed, dist.rank, dist.world)
            pixels, labels = _load_batch(model, dataset, idx, dist.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                losses = (
                    losses_fn(model, pixels, labels, idx)
                    if losses_fn is not None
                    else deal_losses(
                        model,
                        pixels,
                        labels,
                        classes,
                        concepts,
                        lambda_sep=cfg.lambda_sep,
                        lambda_con=cfg.lambda_con,
                        prediction=cfg.prediction,
                        k=cfg.k,
                        templates=cfg.templates,
                    )
                )
            vals = dist.mean(losses.as_floats())  # the union batch's losses (each is a mean over images)
            reason = _bad_loss(vals["total"], ema, step - start, cfg)
            if dist.agree(reason is not None):
                stopped = f"step {step + 1}: " + (reason or "a loss on another process was not finite or exploded")
                break
            opt.zero_grad(set_to_none=True)
            losses.total.backward()
            dist.average_grads(params)
            gn = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf")))
            if dist.agree(not math.isfinite(gn)):
                stopped = f"non-finite gradient norm at step {step + 1}"
                break
            with atomic():  # an interruption never splits an update from its count
                opt.step()
                completed = work.done = step + 1
            ema = vals["total"] if ema is None else 0.9 * ema + 0.1 * vals["total"]
            last = vals
            if log is not None:
                log.write(
                    {
                        "step": step + 1,
                        **vals,
                        "lr": opt.param_groups[0]["lr"],
                        "grad_norm": gn,
                        "seconds": time.perf_counter() - t0,
                    }
                )
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                if dist.main:
                    save_checkpoint(out, model, opt, step + 1)
                dist.barrier()
                ckpt = out / CKPT
            if bar is not None:
                bar[0].update(bar[1], advance=1, description=f"DEAL loss {vals['total']:.4g}")
        else:
            step = cfg.steps
    except KeyboardInterrupt:  # each process stops on its own: no collective call here
        if dist.main and completed > start:
            with atomic():  # a second Ctrl-C waits for the checkpoint
                save_checkpoint(out, model, opt, completed)
        raise
    finally:
        if bar is not None:
            bar[0].stop()
    if stopped != "done" and dist.main:
        (out / "stopped.json").write_text(json.dumps({"step": step, "reason": stopped}))
    done = step if stopped == "done" else (load_step(ckpt) if ckpt is not None else 0)
    return TrainResult(done, stopped, ckpt, last, dist.world, dist.main)


def load_step(ckpt: Path) -> int:
    return int(json.loads((ckpt / "state.json").read_text())["step"])


def _bad_loss(total: float, ema: float | None, seen: int, cfg: DealConfig) -> str | None:
    if not math.isfinite(total):
        return f"loss is {total}"
    if ema is not None and seen >= cfg.explode_warmup and total > cfg.explode_factor * max(abs(ema), cfg.explode_floor):
        return f"loss exploded ({total:.4g} > {cfg.explode_factor} x running mean {ema:.4g})"
    return None


def _progress(show: bool, total: int, start: int):
    if not show:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    )
    task = p.add_task("DEAL", total=total, completed=start)
    p.start()
    return p, task
