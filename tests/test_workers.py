"""The data-parallel launcher: a worker that aborts while exiting after delivering its result does
not cost the run (the other worker finishes and saves); one that fails before it stops the run."""

from __future__ import annotations

import os
import warnings

import pytest
import torch.multiprocessing as mp

from vlexplain.distributed import join_workers


def _worker(rank: int, results, crash_after: bool, crash_before: bool, gone, alive) -> None:
    """Rank 0 delivers its result only once rank 1 has ended (``gone``: the pipe end only rank 1
    keeps open reads EOF when it exits), so rank 1's crash always happens while rank 0 still runs."""
    if rank == 0:
        alive.close()
        try:
            gone.recv()
        except EOFError:  # rank 1 has exited
            pass
    else:
        gone.close()
        if crash_before:
            os.abort()
    results.put({"rank": rank, "steps": 3})
    if rank == 1 and crash_after:
        os.abort()  # as gloo's teardown did once: "terminate called without an active exception"


def _launch(crash_after: bool, crash_before: bool):
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    gone, alive = ctx.Pipe(duplex=False)
    procs = mp.start_processes(
        _worker, args=(results, crash_after, crash_before, gone, alive), nprocs=2, join=False, start_method="spawn"
    )
    alive.close()  # rank 1 holds the last copy
    return procs, results


def test_abort_after_the_result_keeps_the_run():
    procs, results = _launch(crash_after=True, crash_before=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        infos = join_workers(procs, results, {})
    assert [i["rank"] for i in infos] == [0, 1]
    assert procs.processes[0].exitcode == 0  # the lead was not terminated
    assert any("worker 1 exited with code" in str(x.message) for x in w)


def test_failure_before_the_result_stops_the_run():
    procs, results = _launch(crash_after=False, crash_before=True)
    with pytest.raises(mp.ProcessExitedException):
        join_workers(procs, results, {})
    assert not any(p.is_alive() for p in procs.processes)


def test_clean_run_returns_every_result_without_a_warning():
    procs, results = _launch(crash_after=False, crash_before=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        infos = join_workers(procs, results, {})
    assert [i["steps"] for i in infos] == [3, 3]
