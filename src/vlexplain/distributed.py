"""Helpers shared by the data-parallel training loops (DEAL fine-tuning, the shapes-world CLIP)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: gradient elements per all-reduce
BUCKET = 1 << 24


def average_gradients(
    params: Sequence[torch.nn.Parameter], mean: Callable[[Tensor], Tensor], bucket: int = BUCKET
) -> None:
    """Replace every parameter's gradient by its mean over processes, in place.

    Gradients are flattened into buckets of one dtype and at most about ``bucket`` elements, so a
    model costs a few collective calls rather than one per parameter. A missing gradient counts as
    zeros (every process must send the same buckets).

    Args:
        params: the parameters, in the same order on every process.
        mean: the collective: a flat tensor in, its element-wise mean over processes out (may
            work in place), e.g. accelerate's ``reduce(t, reduction="mean")``.
        bucket: elements per bucket.
    """
    grads: list[Tensor] = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    buckets: list[list[Tensor]] = []
    size = 0
    for g in grads:
        if not buckets or g.dtype != buckets[-1][0].dtype or size >= bucket:
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += g.numel()
    for group in buckets:
        flat = mean(torch.cat([g.reshape(-1) for g in group]))
        for g, part in zip(group, flat.split([g.numel() for g in group])):
            g.copy_(part.view_as(g))


# --- the launcher of data-parallel CPU workers (testbed train-shapes) ------------------------------
def join_workers(procs: Any, results: Any, got: dict[int, dict]) -> list[dict]:
    """Wait for every worker's result. A worker that fails before delivering it stops the others and
    raises (torch's join, with the worker's error); one that crashes while exiting after delivering it
    (a rare abort in the process group's teardown) leaves the others to finish and save."""
    import warnings

    def drain() -> None:
        while not results.empty():
            r = results.get()
            got[r["rank"]] = r

    while True:
        drain()
        ps = procs.processes
        failed = [i for i, p in enumerate(ps) if not p.is_alive() and p.exitcode != 0]
        drain()  # a worker that delivered and then died: its result is in the queue by now
        if any(i not in got for i in failed):
            procs.join()  # raises, naming the failed worker
        if not any(p.is_alive() for p in ps):
            break
        time.sleep(0.1)
    if len(got) < len(ps):
        procs.join()
        raise RuntimeError(f"data-parallel workers {sorted(set(range(len(ps))) - set(got))} ended without a result")
    bad = [f"worker {i} exited with code {p.exitcode}" for i, p in enumerate(ps) if p.exitcode != 0]
    if bad:
        warnings.warn(f"{'; '.join(bad)} after delivering its result; the weights are complete", stacklevel=2)
    return [got[i] for i in range(len(ps))]


def stop_workers(processes: list, results: Any, got: dict[int, dict], work: Any, out_dir: str | Path) -> None:
    """Ask every worker to stop at the end of its step (they agree through the lead's clock), wait, report."""
    import os
    import signal

    for p in processes:
        if p.is_alive():
            os.kill(p.pid, signal.SIGINT)
    for p in processes:
        p.join(120)
        if p.is_alive():
            p.kill()
    while not results.empty():
        r = results.get()
        got[r["rank"]] = r
    for info in got.values():
        if info["rank"] == 0 and info["steps"]:
            work.done, work.resume = info["steps"], f"weights saved to {out_dir}; continue with --init-from {out_dir}"
