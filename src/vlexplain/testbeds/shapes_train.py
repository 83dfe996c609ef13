"""Train and evaluate a small CLIP on the shapes world (minutes on a CPU).

Every scene of a batch is scored against every text of the world. With the default sigmoid loss
each (scene, text) pair is its own binary problem, the text being true of the scene when it fits
any object in it (category caption, coloured caption, part descriptor); ``loss="softmax"`` uses a
softmax over texts whose target spreads evenly over the true ones (and one over images). A ranking
loss adds each present category against the absent ones. Learning per CPU-second is what limits a
model trained from scratch in minutes, so the image tower starts from a structured initialisation
(``vlexplain.testbeds.vit_init.structured_init``) and each training image shows it a random 75 % of
its patch tokens (token dropping; at test time it sees them all); the transformer blocks' weight
matrices learn with Muon (``vlexplain.testbeds.optim.Muon``), which learns far more per step
than AdamW, and everything else with AdamW. Scenes live in a pool that is
partly re-rendered after every step; images are flipped and shifted by a few pixels at random, so a
scene seen again is rarely seen the same way.

Training scenes use seeds from ``TRAIN_SEED_BASE * (seed + 1)`` upwards; evaluation uses seeds
below ``TRAIN_SEED_BASE``, so the two never overlap.

Example:
    >>> train_shapes(minutes=6, out_dir="shapes_clip", seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..distributed import average_gradients, join_workers, stop_workers
from ..interrupt import atomic, on_interrupt, track
from .optim import Muon, Optimizers
from .shapes import Scene, render_scene
from .shapes_categories import CATEGORIES, all_texts, category_caption, vocabulary
from .shapes_losses import multi_positive_loss, random_shift, ranking_loss, sigmoid_loss
from .testbed_models import CONTEXT_LENGTH, build_vocab, word_tokenizer
from .vit_init import structured_init

TRAIN_SEED_BASE = 10_000_000
RANK_SEED_STRIDE = 1_000_000  # training-scene seeds of process r start r * stride above process 0's
MEAN = (0.48145466, 0.4578275, 0.40821073)  # the adapter's default (CLIP) normalisation
STD = (0.26862954, 0.26130258, 0.27577711)
OPTIMIZERS = ("muon", "adamw")  # ShapesCLIPConfig.optimizer's choices


@dataclass
class ShapesCLIPConfig:
    """Architecture and training settings (saved beside the weights as ``train_config.json``)."""

    image_size: int = 64  # scene side in pixels
    patch_size: int = 8  # ViT patch side
    vision_width: int = 64  # ViT hidden size
    vision_layers: int = 3  # (4 learned less in 10 minutes: fewer steps; benchmarks/RESULTS.md)
    text_width: int = 64  # text transformer hidden size
    text_layers: int = 3
    heads: int = 4  # attention heads in both towers
    activation: str = "relu"  # MLP activation of both towers (transformers name; cheaper than gelu on a CPU)
    token_drop: float = 0.25  # share of patch tokens each training image leaves out at random (none at test time)
    init: str = "mimetic"  # image tower start: "mimetic" (see structured_init) or "default" (transformers')
    mimetic_qk: tuple[float, float] = (0.7, 0.7)  # (alpha, beta): each head's W_q^T W_k ~ alpha Z + beta I
    mimetic_vo: tuple[float, float] = (0.4, 0.4)  # (alpha, beta): W_o W_v ~ alpha Z - beta I
    projection_dim: int = 64  # joint embedding size
    batch_size: int = 96  # scenes per step and process (in a fixed time, more steps beat bigger batches down to ~96)
    lr: float = 2e-3  # peak AdamW learning rate (linear warm-up, cosine decay over the time budget; logged)
    optimizer: str = "muon"  # "muon": Muon for the blocks' weight matrices, AdamW for the rest; "adamw": AdamW for all
    muon_lr: float = 8e-3  # Muon's peak learning rate (its update RMS scaled like an AdamW step of the same lr)
    warmup_steps: int = 30
    weight_decay: float = 0.05
    pool_size: int = 2000  # scenes kept in memory
    refresh_per_step: int = 64  # pool scenes replaced by fresh ones after every step (each seen about 1.5 times)
    shift: int = 4  # training images move by up to this many pixels each way (border pixels repeated)
    object_counts: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)  # P(1..4 objects) of training scenes
    caption_weights: tuple[float, float, float] = (0.3, 0.2, 0.5)  # caption, coloured caption, descriptor
    loss: str = "sigmoid"  # "sigmoid": independent binary loss per (scene, text); "softmax": multi-positive softmax
    rank_weight: float = 1.0  # weight of the category ranking loss (each present category vs all absent ones)
    threads: int = 2  # torch CPU threads (on a busy machine 1 can be faster)
    eval_every: int = 50  # steps between quick held-out accuracy checks (logged; 0: never)
    save_every_s: float = 120.0  # seconds between checkpoints written to out_dir
    spurious: float | None = (
        None  # P: the main object's badge is drawn with probability P (else none or another's; shapes_cue)
    )


def build_model(cfg: ShapesCLIPConfig, vocab_size: int, seed: int) -> nn.Module:
    """A randomly initialised transformers CLIPModel with the world's word vocabulary."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=cfg.text_width,
            intermediate_size=4 * cfg.text_width,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.heads,
            max_position_embeddings=CONTEXT_LENGTH,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            hidden_act=cfg.activation,
        ),
        vision_config=dict(
            hidden_size=cfg.vision_width,
            intermediate_size=4 * cfg.vision_width,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            hidden_act=cfg.activation,
        ),
        projection_dim=cfg.projection_dim,
    )
    model = CLIPModel(config)
    if cfg.init == "mimetic":
        structured_init(model.vision_model, cfg.mimetic_qk, cfg.mimetic_vo)
    elif cfg.init != "default":
        raise ValueError(f"init must be 'mimetic' or 'default', got {cfg.init!r}")
    return model


def scene_pixels(scenes: list[Scene]) -> Tensor:
    """(N, 3, S, S) normalised float pixels, the same as the adapter's preprocessing at the native size."""
    x = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


class _Pool:
    """Training scenes in memory, refreshed a few at a time."""

    def __init__(self, cfg: ShapesCLIPConfig, seed: int, text_index: dict[str, int], rank: int = 0):
        self.cfg, self.text_index = cfg, text_index
        self.next_seed = TRAIN_SEED_BASE * (seed + 1) + RANK_SEED_STRIDE * rank  # each process its own scenes
        self.rng = np.random.default_rng([seed, rank])
        self.gen = torch.Generator().manual_seed(int(self.rng.integers(2**62)))  # token dropping
        n = cfg.pool_size
        self.pixels = torch.empty((n, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
        self.truth = torch.zeros((n, len(text_index)), dtype=torch.bool)  # texts true of each scene
        self.object_texts: list[list[list[int]]] = [[] for _ in range(n)]
        for i in range(n):
            self._fill(i)

    def _fill(self, i: int) -> None:
        p = np.asarray(self.cfg.object_counts, dtype=float)
        n_obj = 1 + int(self.rng.choice(4, p=p / p.sum()))
        if self.cfg.spurious is None:
            s = render_scene(self.next_seed, size=self.cfg.image_size, n_objects=n_obj)
        else:  # a badge cue that the captions never mention
            from .shapes_cue import render_cue_scene, training_badge

            badge = training_badge(self.rng, self.cfg.spurious)
            s = render_cue_scene(self.next_seed, badge, size=self.cfg.image_size, n_objects=n_obj)
        self.next_seed += 1
        self.pixels[i] = torch.from_numpy(s.image).permute(2, 0, 1)
        self.truth[i] = False
        self.object_texts[i] = []
        for k in range(len(s.objects)):
            ids = [self.text_index[t] for t in s.object_texts(k)]
            self.truth[i, ids] = True
            self.object_texts[i].append(ids)

    def refresh(self, k: int) -> None:
        for i in self.rng.choice(len(self.object_texts), size=k, replace=False):
            self._fill(int(i))

    def batch(self, b: int) -> tuple[Tensor, Tensor, list[int]]:
        """Pixels (B,3,S,S) normalised and flipped at random, truth (B, n_texts), one text id per scene."""
        idx = self.rng.choice(len(self.object_texts), size=b, replace=False)
        x = self.pixels[idx].float() / 255.0
        flip = torch.from_numpy(self.rng.random(b) < 0.5)
        x[flip] = x[flip].flip(-1)
        if self.cfg.shift > 0:
            x = random_shift(x, self.cfg.shift, self.gen)
        x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        w = np.asarray(self.cfg.caption_weights, dtype=float)
        chosen = []
        for i in idx:
            obj = self.object_texts[i][int(self.rng.integers(len(self.object_texts[i])))]
            kind = int(self.rng.choice(3, p=w / w.sum()))
            chosen.append(obj[kind] if kind < 2 else obj[2 + int(self.rng.integers(len(obj) - 2))])
        return x, self.truth[idx], chosen


def _embed(
    model: Any,
    pixels: Tensor | None = None,
    ids: Tensor | None = None,
    am: Tensor | None = None,
    keep: Tensor | None = None,
) -> Tensor:
    """Unit-norm embeddings of images or texts; ``keep`` (B, k) patch indices: the image tower sees
    only those patch tokens (and the class token), after position embeddings are added."""
    if pixels is not None and keep is not None:
        vm = model.vision_model
        h = vm.embeddings(pixels)  # (B, 1 + n, d), positions included
        kept = h[:, 1:].gather(1, keep[..., None].expand(-1, -1, h.shape[-1]))
        out = vm.encoder(inputs_embeds=vm.pre_layrnorm(torch.cat([h[:, :1], kept], 1))).last_hidden_state
        e = model.visual_projection(vm.post_layernorm(out[:, 0]))
    elif pixels is not None:
        e = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    else:
        e = model.text_projection(model.text_model(input_ids=ids, attention_mask=am).pooler_output)
    return nn.functional.normalize(e, dim=-1)


def _lr_factor(step: int, frac: float, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def train_shapes(
    minutes: float = 6.0,
    out_dir: str | Path = "shapes_clip",
    seed: int = 0,
    config: ShapesCLIPConfig | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
    processes: int = 1,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train a shapes-world CLIP for a wall-clock budget and save it.

    Args:
        minutes: training time budget (scene rendering for the initial pool included).
        out_dir: where to write ``config.json``, ``model.safetensors``, ``vocab.json``,
            ``train_config.json`` and ``train_log.csv`` (step, seconds, loss, lr).
        seed: seeds the initialisation, the training scenes and the batch sampling.
        config: architecture and optimisation settings.
        progress: show a rich progress bar.
        init_from: continue from the weights in this directory (same architecture) instead of a
            random initialisation.
        processes: data-parallel worker processes (gloo all-reduce of the gradients). Each draws
            its own scenes and a batch of ``config.batch_size`` per step, so a step sees
            ``processes * batch_size`` scenes. On a CPU, one single-threaded process per core
            trains faster than one process with several threads.
        max_steps: stop after this many steps even if time is left.

    Returns:
        ``{"steps", "seconds", "cpu_seconds", "first_loss", "last_loss", "out_dir", "processes"}``
        (``cpu_seconds`` summed over the processes).
    """
    cfg = config or ShapesCLIPConfig()
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if cfg.loss not in ("sigmoid", "softmax"):  # checked before any scene is rendered or process started
        raise ValueError(f"loss must be 'sigmoid' or 'softmax', got {cfg.loss!r}")
    if cfg.init not in ("mimetic", "default"):
        raise ValueError(f"init must be 'mimetic' or 'default', got {cfg.init!r}")
    _check_optimizer(cfg.optimizer)
    if not 0.0 <= cfg.token_drop < 1.0:
        raise ValueError(f"token_drop must be in [0, 1), got {cfg.token_drop}")
    args = (minutes, str(out_dir), seed, cfg, progress, None if init_from is None else str(init_from), max_steps)
    if processes == 1:
        return _train(0, 1, None, *args)
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free port for the process group
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    procs = mp.start_processes(
        _worker, args=(processes, port, results, args), nprocs=processes, join=False, start_method="spawn"
    )
    got: dict[int, dict] = {}  # results delivered so far, by rank
    with track("steps", max_steps, resume=None) as work:
        try:
            infos = join_workers(procs, results, got)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the workers stop after this step and rank 0 saves
            stop_workers(procs.processes, results, got, work, out_dir)
            raise
    info = next(i for i in infos if i["rank"] == 0)
    if len({i["checksum"] for i in infos}) != 1:
        raise RuntimeError("data-parallel workers ended with different weights")
    info["cpu_seconds"] = round(sum(i["cpu_seconds"] for i in infos), 1)
    return info


_STOP = threading.Event()  # set in a worker by SIGINT / SIGTERM: the lead's clock then reads "time is up"


def _worker(rank: int, world: int, port: int, results, args: tuple) -> None:
    import os
    import signal

    import torch.distributed as dist

    for s in (signal.SIGINT, signal.SIGTERM):  # stop at a step boundary that every process agrees on
        signal.signal(s, lambda *_: _STOP.set())
    parent = os.getppid()

    def orphan_watch() -> None:  # a worker whose launcher died (killed, Ctrl-C) stops too
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphan_watch, daemon=True).start()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results.put(_train(rank, world, dist, *args))
    finally:
        dist.destroy_process_group()


def _train(
    rank: int,
    world: int,
    dist: Any,
    minutes: float,
    out_dir: str,
    seed: int,
    cfg: ShapesCLIPConfig,
    progress: bool,
    init_from: str | None,
    max_steps: int | None,
) -> dict[str, Any]:
    """The training loop of one process (``dist`` is ``torch.distributed`` when ``world > 1``)."""
    start, cpu0 = time.time(), time.process_time()
    budget = max(1.0, 60.0 * minutes)
    torch.set_num_threads(cfg.threads)
    lead = rank == 0
    out = Path(out_dir)
    if lead:
        out.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(vocabulary())
    texts = all_texts()
    text_batch = word_tokenizer(vocab)(texts)
    if minutes < 10:  # short runs: a pool rendered in a fraction of the budget
        cfg = ShapesCLIPConfig(
            **{**asdict(cfg), "pool_size": max(2 * cfg.batch_size, int(cfg.pool_size * minutes / 10))}
        )
    pool = _Pool(cfg, seed, {t: i for i, t in enumerate(texts)}, rank)
    monitor = _Monitor(cfg, texts) if cfg.eval_every and lead else None
    if init_from is not None:
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(init_from).train()
    else:
        model = build_model(cfg, len(vocab), seed).train()  # the same initial weights in every process
    bias = None
    if cfg.loss == "sigmoid":  # SigLIP's start: scale 10, bias -10 (the bias is a training-only offset)
        bias = nn.Parameter(torch.tensor(-10.0))
        if init_from is None:
            with torch.no_grad():
                model.logit_scale.fill_(math.log(10.0))
    params = [p for p in model.parameters() if p.requires_grad] + ([bias] if bias is not None else [])
    cat_cols = torch.tensor([texts.index(category_caption(c.name)) for c in CATEGORIES])
    opt = _optimizer(model, bias, cfg)
    sync = _GradSync(params, dist, world) if world > 1 else None
    rows: list[dict[str, Any]] = []
    step, last_save = 0, time.time()

    def keep() -> None:
        if lead and step:
            _save(model, out, vocab, cfg, rows, seed, world)

    with _progress(progress and lead) as bar, track("steps", max_steps, resume=None) as work, on_interrupt(keep):
        task = bar.add_task("training", total=budget, loss=float("nan"), acc=float("nan"), multi=float("nan"))
        while True:
            elapsed = math.inf if _STOP.is_set() else time.time() - start
            if sync is not None:
                elapsed = sync.lead_value(elapsed)  # every process follows the lead's clock
            if elapsed >= budget or (max_steps is not None and step >= max_steps):
                break
            done = max(elapsed / budget, step / max_steps if max_steps else 0.0)  # the schedule's progress
            factor = _lr_factor(step, done, cfg.warmup_steps)
            lr = cfg.lr * factor  # AdamW's, logged
            for g in opt.param_groups:
                g["lr"] = g["peak_lr"] * factor
            with atomic():  # an interruption never splits an update from its count
                loss = _step(
                    model, opt, pool, text_batch, cfg.batch_size, cat_cols, cfg.rank_weight, sync, bias, cfg.token_drop
                )
                pool.refresh(min(cfg.refresh_per_step, len(pool.object_texts)))
                step = work.done = step + 1
                work.resume = f"weights saved to {out}; continue with --init-from {out}"
            if not lead:
                continue
            nan = float("nan")
            acc, multi = monitor(model, text_batch) if monitor and step % cfg.eval_every == 0 else (nan, nan)
            rows.append(
                {
                    "step": step,
                    "seconds": round(time.time() - start, 2),
                    "cpu_seconds": round(time.process_time() - cpu0, 2),
                    "loss": round(loss, 5),
                    "lr": round(lr, 7),
                    "heldout_accuracy": acc,
                    "heldout_multi_ranking": multi,
                }
            )
            if acc == acc:
                bar.update(task, acc=acc, multi=multi)
            bar.update(task, completed=min(budget, time.time() - start), loss=loss)
            if time.time() - last_save > cfg.save_every_s:
                _save(model, out, vocab, cfg, rows, seed, world)
                model.train()
                last_save = time.time()
    if lead:
        _save(model, out, vocab, cfg, rows, seed, world)
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in model.parameters()))
    return {
        "steps": step,
        "seconds": round(time.time() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "first_loss": rows[0]["loss"] if rows else float("nan"),
        "last_loss": float(np.mean([r["loss"] for r in rows[-10:]])) if rows else float("nan"),
        "out_dir": str(out),
        "processes": world,
        "rank": rank,
        "checksum": checksum,
    }


def _optimizer(model: nn.Module, bias: Tensor | None, cfg: ShapesCLIPConfig) -> Optimizers:
    """AdamW over every parameter, or with ``optimizer="muon"`` Muon over the transformer blocks'
    2-D weight matrices (attention and MLP, both towers) and AdamW over embeddings, norms, biases,
    projections and the logit scale. Each group's ``peak_lr`` is what the schedule scales."""
    _check_optimizer(cfg.optimizer)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    muon = cfg.optimizer == "muon"
    hidden = [p for n, p in named if muon and ".encoder.layers." in n and p.ndim == 2]
    ids = {id(p) for p in hidden}
    rest = [p for _, p in named if id(p) not in ids] + ([bias] if bias is not None else [])
    opts: list[torch.optim.Optimizer] = [
        torch.optim.AdamW([{"params": rest, "peak_lr": cfg.lr}], lr=cfg.lr, weight_decay=cfg.weight_decay)
    ]
    if hidden:
        opts.append(Muon([{"params": hidden, "peak_lr": cfg.muon_lr}], lr=cfg.muon_lr, weight_decay=cfg.weight_decay))
    return Optimizers(opts)


def _check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


class _GradSync:
    """Averages gradients over the processes (flat all-reduces) and shares the lead's clock."""

    def __init__(self, params: list[nn.Parameter], dist: Any, world: int):
        self.params, self.dist, self.world = params, dist, world

    def __call__(self) -> None:
        average_gradients(self.params, self._mean)

    def _mean(self, flat: Tensor) -> Tensor:
        self.dist.all_reduce(flat)
        return flat.div_(self.world)

    def lead_value(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64)
        self.dist.broadcast(t, src=0)
        return float(t)


class _Monitor:
    """Quick held-out checks during training: category accuracy on single-object scenes and the
    share of 2-4-object scenes whose present categories all outrank the absent ones."""

    def __init__(self, cfg: ShapesCLIPConfig, texts: list[str], n: int = 64):
        single = [render_scene(5_000_000 + i, size=cfg.image_size, n_objects=1) for i in range(n)]
        multi = [render_scene(6_000_000 + i, size=cfg.image_size, n_objects=2 + i % 3) for i in range(n)]
        self.pixels = scene_pixels(single + multi)
        self.n = n
        captions = [category_caption(c.name) for c in CATEGORIES]
        self.cols = [texts.index(c) for c in captions]
        self.truth = torch.tensor([captions.index(category_caption(s.objects[0].category)) for s in single])
        self.present = torch.tensor([[c.name in s.categories for c in CATEGORIES] for s in multi])

    @torch.no_grad()
    def __call__(self, model: nn.Module, text_batch) -> tuple[float, float]:
        model.eval()
        img = _embed(model, pixels=self.pixels)
        txt = _embed(model, ids=text_batch.ids[self.cols], am=text_batch.attention_mask[self.cols])
        model.train()
        sim = img @ txt.T
        acc = float((sim[: self.n].argmax(1) == self.truth).float().mean())
        sm = sim[self.n :]
        low = sm.masked_fill(~self.present, float("inf")).amin(1)
        high = sm.masked_fill(self.present, float("-inf")).amax(1)
        return acc, float((low > high).float().mean())


def _step(
    model: Any,
    opt: Optimizers | torch.optim.Optimizer,
    pool: _Pool,
    text_batch,
    batch_size: int,
    cat_cols: Tensor | None = None,
    rank_weight: float = 0.0,
    sync: _GradSync | None = None,
    bias: Tensor | None = None,
    token_drop: float = 0.0,
) -> float:
    x, truth, chosen = pool.batch(min(batch_size, len(pool.object_texts)))
    keep = None
    if token_drop > 0:  # each image keeps its own random subset of patch tokens (cheaper steps)
        n = model.vision_model.embeddings.num_patches
        keep = torch.rand(len(x), n, generator=pool.gen).argsort(1)[:, : n - int(round(token_drop * n))]
    img = _embed(model, pixels=x, keep=keep)  # (B, d)
    txt = _embed(model, ids=text_batch.ids, am=text_batch.attention_mask)  # (n_texts, d)
    scale = model.logit_scale.exp().clamp(max=100.0)
    logits = scale * img @ txt.T  # (B, n_texts)
    if bias is not None:
        loss = sigmoid_loss(logits + bias, truth)
    else:
        uniq = sorted(set(chosen))
        i2t = multi_positive_loss(logits, truth)
        t2i = multi_positive_loss(logits[:, uniq].T, truth[:, uniq].T)
        loss = 0.5 * (i2t + t2i)
    if rank_weight and cat_cols is not None:
        loss = loss + rank_weight * ranking_loss(logits[:, cat_cols], truth[:, cat_cols])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if sync is not None:
        sync()
    nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    return float(loss.detach())


def _progress(enabled: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("/"),
        TimeRemainingColumn(),
        TextColumn(
            "loss {task.fields[loss]:.3f}  held-out acc {task.fields[acc]:.2f}  "
            "multi-object ranking {task.fields[multi]:.2f}"
        ),
        disable=not enabled,
        transient=False,
    )


def _save(
    model: Any, out: Path, vocab: list[str], cfg: ShapesCLIPConfig, rows: list, seed: int, processes: int = 1
) -> None:
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "vocab.json").write_text(json.dumps({"tokens": vocab}) + "\n")
    (out / "train_config.json").write_text(
        json.dumps({**asdict(cfg), "seed": seed, "processes": processes}, indent=2) + "\n"
    )
    with open(out / "train_log.csv", "w", newline="") as f:
        cols = ["step", "seconds", "cpu_seconds", "loss", "lr", "heldout_accuracy", "heldout_multi_ranking"]
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows({k: "" if v != v else v for k, v in r.items()} for r in rows)  # NaN (not measured): empty
