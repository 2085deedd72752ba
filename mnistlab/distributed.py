"""Data-parallel training over several processes or machines, launched by PyTorch's own ``torchrun``.

One machine, two processes (the two lines do the same)::

    torchrun --nproc-per-node=2 -m mnistlab train --preset fast --out runs/ddp
    mnistlab train --preset fast --out runs/ddp --nproc 2

Each process (a *rank*) holds the whole data set in memory, draws the same epoch permutation from the
shared seed and trains on its slice of every global batch; ``DistributedDataParallel`` averages the
gradients, so all ranks hold the same weights after every step. Metrics are summed across ranks before
anything is printed; rank 0 alone prints and writes files. Backend: ``gloo`` on CPU, ``nccl`` on CUDA.

In your own script, run by ``torchrun --nproc-per-node=2 my_script.py``, every rank runs the same lines:

>>> from mnistlab.engine import Trainer
>>> from mnistlab.models import mlp
>>> ctx = setup()          # joins the run; None when started without torchrun (then fit trains alone)
>>> trainer = Trainer(mlp(), dist=ctx)  # data-parallel only when given the context; rank 0 alone prints
>>> history = trainer.fit(x, y, batch_size=256, epochs=3)  # doctest: +SKIP
>>> teardown()
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mnistlab import fileio
from mnistlab.devices import pick_device
from mnistlab.errors import CheckpointError, ConfigError, DistributedError, MnistlabError

# How long a rank waits in a collective for the others (data loading on rank 0 happens inside one).
TIMEOUT = datetime.timedelta(minutes=30)
LOCALHOST = "127.0.0.1"


class PeerLostError(DistributedError):
    """This rank's partner went away mid-run: a consequence of another rank's failure, not its cause."""

    exit_code = 1


class RankFailed(DistributedError):
    """A launched process failed; the message is its own, the exit code its own (128 + N for signal N)."""

    def __init__(self, message: str, exitcode: int) -> None:
        super().__init__(message)
        self.exit_code = exitcode if exitcode > 0 else 128 - exitcode
        self.signal = -exitcode if exitcode < 0 else 0


class LaunchInterrupted(DistributedError):
    """Ctrl-C (or SIGTERM) reached the launcher; every rank was stopped."""

    exit_code = 130


@dataclass(frozen=True)
class Context:
    """Where this process stands in the run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives: the trainer calls them on the context it was given, never on a global --------

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over all ranks, bit-identical on every rank (so decisions taken on it agree)."""
        buf = t.to(self.device, copy=True)
        dist.all_reduce(buf)
        dist.broadcast(buf, 0)  # one rank's bits for all, whatever order the backend summed in
        return buf.to(t.device)

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        t = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def all_gather_bytes(self, blob: bytes) -> list[bytes]:
        """Every rank's ``blob``, in rank order (blobs may differ in length)."""
        size = torch.tensor([len(blob)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = max(int(s) for s in sizes)
        buf = torch.zeros(longest, dtype=torch.uint8)
        buf[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else buf[:0]
        buf = buf.to(self.device)
        bufs = [torch.empty_like(buf) for _ in range(self.world_size)]
        dist.all_gather(bufs, buf)
        return [bytes(b[: int(s)].cpu().numpy()) for b, s in zip(bufs, sizes, strict=True)]

    def sync_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics), as DDP does before each forward.

        Between forwards each rank's statistics drift by its own last batch; a checkpoint or an evaluation
        must see the same model on every rank.
        """
        for b in module.buffers():
            dist.broadcast(b, 0)


_ctx: Context | None = None


def env_ranks() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets, or None outside torchrun."""
    if "WORLD_SIZE" not in os.environ:
        return None
    values = []
    for name, default in (("RANK", None), ("WORLD_SIZE", None), ("LOCAL_RANK", "0")):
        raw = os.environ.get(name, default)
        if raw is None:
            raise DistributedError(f"WORLD_SIZE is set but {name} is not (launch with torchrun, which sets both)")
        try:
            values.append(int(raw))
        except ValueError:
            raise DistributedError(f"environment variable {name} must be an integer, got {raw!r}") from None
    rank, world, local = values
    if world < 1:
        raise DistributedError(f"world size must be ≥ 1, got WORLD_SIZE={world}")
    if not 0 <= rank < world:
        raise DistributedError(f"RANK must lie in 0..{world - 1} for WORLD_SIZE={world}, got RANK={rank}")
    if local < 0:
        raise DistributedError(f"LOCAL_RANK must be ≥ 0, got {local}")
    return rank, world, local


def current() -> Context | None:
    """This process's place in the run, or None when it trains alone."""
    return _ctx


def _env_rank_field(index: int, alone: int) -> int:
    """Field ``index`` of torchrun's ``(RANK, WORLD_SIZE, LOCAL_RANK)``, or ``alone`` outside torchrun."""
    with contextlib.suppress(DistributedError):
        ranks = env_ranks()
        if ranks is not None:
            return ranks[index]
    return alone


def rank() -> int:
    """0 for a single process; before ``setup`` (and after ``teardown``) torchrun's ``RANK``."""
    return _ctx.rank if _ctx is not None else _env_rank_field(0, alone=0)


def world_size() -> int:
    return _ctx.world_size if _ctx is not None else _env_rank_field(1, alone=1)


def is_main() -> bool:
    """True on the rank that prints and writes files (rank 0), and in a single process."""
    return rank() == 0


def device_for(device: str | torch.device, local_rank: int, nproc: int = 1) -> torch.device:
    """The device of the rank ``local_rank`` on its machine: ``cuda:<local_rank>`` on GPUs, else the CPU."""
    kind = pick_device(str(device), mps=False)  # gloo and nccl carry no MPS tensors
    if kind.type != "cuda":
        return kind
    have = torch.cuda.device_count()
    if max(local_rank + 1, nproc) > have:
        raise DistributedError(
            f"{max(local_rank + 1, nproc)} processes on this machine need as many GPUs, but it has {have} "
            f"(use at most {have} per machine, or --device cpu)"
        )
    return torch.device("cuda", local_rank)


def setup(device: str | torch.device = "auto") -> Context | None:
    """Join the run torchrun started (once per process); None when there is no run to join.

    A world of one process is no run: it trains exactly as a plain single process does.
    """
    global _ctx
    if _ctx is not None:
        return _ctx
    ranks = env_ranks()
    if ranks is None or ranks[1] == 1:
        return None
    rank_, world, local = ranks
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise DistributedError(f"WORLD_SIZE={world} is set but {name} is not (launch with torchrun)")
    dev = device_for(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(backend, rank=rank_, world_size=world, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:  # DistNetworkError and friends subclass RuntimeError
        raise DistributedError(
            f"rank {rank_} of {world} could not join the run at {where} ({_first_line(e)})"
        ) from None
    _ctx = Context(rank_, world, local, backend, dev)
    return _ctx


def teardown(clean: bool = False) -> None:
    """Leave the run.

    ``clean`` (every rank finished the same work): wait for the others, then free what still holds the
    process group (a DDP wrapper's reducer lives in a reference cycle) before destroying it, so no backend
    thread outlives the group or meets the interpreter's shutdown: one CI run saw a rank end in
    ``terminate called without an active exception`` (SIGABRT), a thread torn down while it ran (where in the
    run is not known; it did not recur in 47 runs here). Without ``clean`` (a rank failed) nobody waits: the
    group is destroyed at once.
    """
    global _ctx
    if _ctx is not None:
        if clean:
            with contextlib.suppress(RuntimeError, ValueError):
                dist.barrier()
            gc.collect()
        with contextlib.suppress(RuntimeError, ValueError):
            dist.destroy_process_group()
        _ctx = None


# -- collectives, each a no-op for a single process ----------------------------------------------


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks of the joined run (``t`` itself when alone)."""
    return t if _ctx is None else _ctx.all_reduce_sum(t)


def broadcast_flag(flag: bool) -> bool:
    return flag if _ctx is None else _ctx.broadcast_flag(flag)


def all_gather_bytes(blob: bytes) -> list[bytes]:
    return [blob] if _ctx is None else _ctx.all_gather_bytes(blob)


def barrier() -> None:
    if _ctx is not None:
        dist.barrier()


def sync_buffers(module: nn.Module) -> None:
    if _ctx is not None:
        _ctx.sync_buffers(module)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (a download, a cache being written), then the others do."""
    if _ctx is not None and not _ctx.is_main:
        dist.barrier()
    yield
    if _ctx is not None and _ctx.is_main:
        dist.barrier()


@contextlib.contextmanager
def peer_errors() -> Iterator[None]:
    """Turn "the other side hung up" from a collective into ``PeerLostError``: another rank failed first."""
    try:
        yield
    except MnistlabError:
        raise
    except RuntimeError as e:  # what gloo and nccl raise, DistError included
        if _ctx is None or not lost_peer(e):
            raise
        raise PeerLostError(
            f"rank {_ctx.rank} of {_ctx.world_size}: lost contact with the other processes of this run "
            f"(one of them failed or was stopped; its own error says why)"
        ) from None


def lost_peer(exc: BaseException) -> bool:
    """Does ``exc`` say that another rank went away (rather than a bug in this one)?"""
    text = str(exc).lower()
    signs = ("closed by peer", "reset by peer", "connection refused", "connection closed")
    dist_error = getattr(dist, "DistError", ())
    return isinstance(exc, dist_error) or any(s in text for s in signs)


# -- checks ---------------------------------------------------------------------------------------


def per_rank_batch(batch_size: int, world: int) -> int:
    """The batch each rank takes from a global batch of ``batch_size``; it must divide evenly."""
    if world > 1 and batch_size % world:
        lower = batch_size - batch_size % world
        hint = f"{lower} or {lower + world}" if lower else f"{world}"
        raise ConfigError(
            f"batch size {batch_size} does not divide among {world} processes (each takes batch size / "
            f"{world}); use a multiple of {world}, e.g. {hint}"
        )
    return batch_size // world


def check_same_world(run: object, was: int, now: int) -> None:
    """A run resumes with as many processes as it was trained with: each one's generators are in the checkpoint."""
    if was != now:
        raise CheckpointError(
            f"{run}: trained as {was} process(es), so it resumes only as {was} (asked: {now}); "
            f"mnistlab train --resume {run}" + (f" --nproc {was}" if was > 1 else "")
        )


def check_nproc(nproc: object) -> int:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise DistributedError(f"the number of processes must be an integer ≥ 1, got {nproc!r}")
    return nproc


def check_port(port: int, addr: str = LOCALHOST) -> None:
    """Raise ``DistributedError`` when ``port`` cannot be listened on (another run holds it)."""
    if not 1 <= port <= 65535:
        raise DistributedError(f"port must lie in 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the rendezvous store binds: a port lingering in TIME_WAIT is free, one being listened on is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError as e:
            raise DistributedError(
                f"port {port} on {addr} is in use ({e.strerror}); pick another with --master-port, "
                "or leave it out to take a free one"
            ) from None


# -- launching ------------------------------------------------------------------------------------


def launch(nproc: int, fn: Callable[..., Any], *args: Any, master_port: int | None = None, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in ``nproc`` processes on this machine; return rank 0's result.

    The processes are started by PyTorch's elastic agent, the launcher inside ``torchrun``, so they see
    exactly what ``torchrun --nproc-per-node=N`` gives them. When one fails, the agent stops the others
    and this raises ``DistributedError`` with the failing rank's own message.

    >>> launch(2, train_run, from_preset("fast"), "runs/ddp")   # doctest: +SKIP
    """
    check_nproc(nproc)
    if env_ranks() is not None:
        raise DistributedError(
            f"already running as one of {os.environ['WORLD_SIZE']} processes (torchrun); leave out --nproc"
        )
    if master_port is not None:
        check_port(master_port)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"mnistlab-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint=f"{LOCALHOST}:{master_port or 0}", max_restarts=0,
        monitor_interval=0.1, start_method="spawn",
    )  # fmt: skip
    # As torchrun does, but sharing the cores out rather than giving each process one.
    threads = str(max(1, cpu_count() // nproc))
    with _env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", threads)), _quiet_agent(), _own_signals():
        try:
            results = elastic_launch(config, _entry)(fn, args, kwargs)
        except ChildFailedError as e:
            raise _root_cause(e, nproc) from None
        except SignalException as e:
            raise LaunchInterrupted(f"stopped by {e.sigval.name}; all {nproc} processes were ended") from None
        except RuntimeError as e:  # the rendezvous store could not start (a port taken since the check)
            raise DistributedError(f"could not start {nproc} processes: {_first_line(e)}") from None
    return results[0]


def _entry(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """What each launched process runs: ``fn``, with a user error reported as one line, not a traceback."""
    try:
        return fn(*args, **kwargs)
    except MnistlabError as e:
        record_error(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def record_error(exc: BaseException) -> None:
    """Leave ``exc`` where the launcher looks for a failed rank's reason (torchrun's error file), if any.

    torchrun then shows this message instead of "To enable traceback see ...", and ``launch`` can tell a
    rank's own failure from the knock-on failures of its partners.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    if isinstance(exc, MnistlabError):
        message, stack = str(exc), str(exc)
    else:
        message, stack = f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))
    data = {
        "message": {"message": message, "extraInfo": {"py_callstack": stack, "timestamp": str(int(time.time()))}},
        "mnistlab": {"knock_on": isinstance(exc, PeerLostError), "exit_code": getattr(exc, "exit_code", 1)},
    }
    with contextlib.suppress(OSError):
        fileio.write_text(path, json.dumps(data))


def _root_cause(e: Any, nproc: int) -> RankFailed:
    """The failure that started it: not a rank that lost its partner, nor one the agent stopped."""
    failures = sorted(e.failures.items())

    def knock_on(f: Any) -> bool:
        return f.exitcode == -signal.SIGTERM or bool(f.error_file_data.get("mnistlab", {}).get("knock_on"))

    own = [(r, f) for r, f in failures if not knock_on(f)] or failures
    rank_, f = min(own, key=lambda rf: (rf[1].timestamp, rf[0]))
    message = f.message.get("message", "") if isinstance(f.message, dict) else ""
    if not message:
        if f.exitcode < 0:
            message = f"killed by {f.signal_name()}"
        else:
            message = f"exited with code {f.exitcode}"
    messages = {m.get("message") if isinstance(m, dict) else None for m in (g.message for _, g in own)}
    same_everywhere = len(own) == nproc and len(messages) == 1  # e.g. a bad setting: every rank says so
    return RankFailed(message if same_everywhere else f"rank {rank_} of {nproc} failed: {message}", f.exitcode)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _own_signals() -> Iterator[None]:
    """The agent turns SIGINT/SIGTERM into its own exception and leaves that in place; put ours back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            with contextlib.suppress(ValueError, TypeError):  # not the main thread, or a foreign handler
                signal.signal(s, handler)


@contextlib.contextmanager
def _quiet_agent() -> Iterator[None]:
    """The agent logs each failure in a multi-line report; ``launch`` raises one line instead."""
    names = [
        n for n in list(logging.root.manager.loggerDict) if n.startswith(("torch.distributed", "torch.multiprocessing"))
    ]
    loggers = [logging.getLogger(n) for n in ["torch.distributed", "torch.multiprocessing", *names]]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def cpu_count() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__
