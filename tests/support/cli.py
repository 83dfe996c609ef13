"""Command lines the tests launch."""

from __future__ import annotations


def two_process_cli(*cli_args: str) -> list[str]:
    """``accelerate launch`` of ``vlexplain`` with two CPU processes on a free port. (``--cpu
    --num_processes 2`` starts a single process unless an MPI hostfile is configured; ``--multi_gpu``
    starts two processes through torch.distributed.run, also on a CPU-only machine.)"""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "1",
        "--main_process_port",
        str(port),
        "-m",
        "vlexplain.cli",
        *cli_args,
    ]
