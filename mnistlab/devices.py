"""Which device a run trains on: ``auto`` takes a CUDA GPU, else an Apple GPU (MPS), else the CPU.

Asking for a device that is not there is a one-line ``ConfigError``, never a traceback deep in torch.
The two availability queries are functions of their own, so tests can stand in for a machine they are
not running on while the choice itself runs unchanged. Torch is imported only when a device is
looked up, so validating a config (``mnistlab.config``) stays free of it and the CLI starts fast.

>>> pick_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnistlab.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def cuda_available() -> bool:
    """True when torch sees a CUDA GPU."""
    import torch

    return torch.cuda.is_available()


def mps_available() -> bool:
    """True on Apple silicon with a torch built for Metal (MPS)."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def valid_device_name(device: str) -> bool:
    """True for the names ``--device`` accepts (whether or not this machine has that device)."""
    if device in ("auto", "cpu", "cuda", "mps"):
        return True
    return device.startswith("cuda:") and device[5:].isdigit()


def pick_device(device: str = "auto", *, mps: bool = True) -> torch.device:
    """The torch device for ``device``; ``mps=False`` where MPS cannot serve (several processes, DDP).

    ``auto`` prefers CUDA, then MPS (when allowed), then the CPU.
    """
    import torch

    if not valid_device_name(device):
        raise ConfigError(f"device must be {DEVICE_CHOICES}, got {device!r}")
    if device == "auto":
        if cuda_available():
            return torch.device("cuda")
        return torch.device("mps" if mps and mps_available() else "cpu")
    if device.startswith("cuda") and not cuda_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here (use --device cpu)")
    if device == "mps":
        if not mps:
            raise ConfigError("device 'mps' trains in one process only; several processes need cpu or cuda")
        if not mps_available():
            raise ConfigError("device 'mps' asked for, but MPS (Apple GPU) is not available here (use --device cpu)")
    return torch.device(device)


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype of running metric sums: float64, except on MPS, which has no float64 (float32 there)."""
    import torch

    return torch.float32 if device.type == "mps" else torch.float64


# -- precision by capability ------------------------------------------------------------------------

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_bf16_units() -> list[str]:
    """The native bfloat16 units torch reports on this CPU: ``AMX``, ``AVX512-BF16`` (empty: none).

    Without them bf16 is emulated and slower than float32 (measured on an AVX2-only EPYC: the ``best``
    preset 11.7x slower, the ``fast`` preset 3x), so ``auto`` picks bf16 only where this list is not empty.
    """
    import torch

    units = []
    for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        query = getattr(torch.cpu, probe, None)
        if query is not None and query():
            units.append(name)
    return units


def cuda_bf16() -> bool:
    """True when the current CUDA device computes in bfloat16 natively (Ampere and newer)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """``(fp32|bf16, why)`` for ``precision`` on ``device``: ``auto`` is bf16 only on native bf16 hardware.

    The decision reads the capability torch reports (never a timing), so it is the same on every run of
    one machine; an explicit ``fp32`` or ``bf16`` is kept as asked.

    >>> import torch
    >>> resolve_precision("fp32", torch.device("cpu"))
    ('fp32', 'asked for')
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision, "asked for"
    if device.type == "cuda":
        return ("bf16", "auto: this GPU computes in bf16") if cuda_bf16() else ("fp32", "auto: no bf16 on this GPU")
    if device.type == "cpu":
        units = cpu_bf16_units()
        if units:
            return "bf16", f"auto: this CPU has native bf16 units ({', '.join(units)})"
        return "fp32", "auto: this CPU has no native bf16 units (AMX, AVX512-BF16), where bf16 is slower"
    return "fp32", f"auto: float32 on {device.type}"


# -- the same arithmetic in every process --------------------------------------------------------------

# torch's exp, log, sqrt, sin, ... on CPU tensors call MKL's vector math, which sets itself up on its first
# call. When that first call comes from two OpenMP threads at once (a tensor big enough to be split, after MKL
# has run matmuls on its own threads), one of them can keep another code path for the rest of the process,
# and its results differ in the last bit: the lean MLP step's exp made one process in four train other
# weights from the same seed on two cores. Called once from one thread first, the set-up is done before any
# race. (Measured: 10 of 40 processes differed at the first step without this, 0 of 40 with it.)
WARMED_FUNCTIONS = ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan", "tanh", "erf", "sigmoid")
_math_warmed = False


def warm_vector_math() -> None:
    """Run torch's elementwise math once in this thread, on tensors too small to be split across threads,
    so that MKL's vector-math set-up never races (see above). Once per process, a few milliseconds.

    >>> warm_vector_math()
    """
    global _math_warmed
    if _math_warmed:
        return
    import torch

    for dtype in (torch.float32, torch.float64):
        x = torch.linspace(0.05, 0.95, 1024, dtype=dtype)  # (below every parallel grain: one thread)
        for name in WARMED_FUNCTIONS:
            getattr(torch, name)(x)
    _math_warmed = True


# -- threads by the cores that are free -------------------------------------------------------------


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask: a container's or ``taskset``'s limit)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cpu_ticks() -> tuple[int, int, int, int] | None:
    """``(busy, all, own, cpus)`` clock ticks since boot: every CPU's busy and total time, this process's
    own CPU time (all its threads), and the number of CPUs counted; None without Linux's ``/proc``."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
        with open("/proc/self/stat", encoding="ascii") as f:
            own_fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    values = [int(v) for v in lines[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    own = int(own_fields[11]) + int(own_fields[12])  # utime + stime (fields 14 and 15 of proc(5))
    return total - idle, total, own, max(cpus, 1)


def _ticks_per_second() -> int:
    import os

    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


class CpuWatch:
    """How many cores other processes keep busy, measured over a stretch of this process's own work.

    Start it, do the work that comes before training anyway (loading data, building the model), then ask
    ``others_busy()``: the CPU time every process but this one used in that window, in cores. It sees the
    load that is there now (the 1-minute load average lags by a minute and counts this process too), and
    costs at most ~0.1 s of waiting, only when the window was too short to count.

    >>> watch = CpuWatch()
    >>> busy = watch.others_busy()  # None where there is no /proc (not Linux)
    >>> busy is None or busy >= 0
    True
    """

    MIN_TICKS = 8  # per CPU: below this (80 ms at Linux's usual 100 ticks a second) the figure is noise

    def __init__(self) -> None:
        self._start = _cpu_ticks()

    def others_busy(self) -> float | None:
        """Cores busy with other processes since the watch started; None without ``/proc``.

        A window shorter than ``MIN_TICKS`` (data that loads from the cache in 30 ms) is topped up by
        waiting: the kernel counts CPU time in ticks, and a few ticks say nothing. The wait costs at most
        about 0.1 s at the start of a run; this process uses no CPU while it waits.
        """
        import time

        if self._start is None:
            return None
        for _ in range(4):
            end = _cpu_ticks()
            if end is None:
                return None
            busy, total, own = (e - s for e, s in zip(end[:3], self._start[:3], strict=True))
            per_cpu = total / end[3]
            if per_cpu >= self.MIN_TICKS:
                return max(0.0, (busy - own) / per_cpu)
            time.sleep((self.MIN_TICKS - per_cpu + 1) / _ticks_per_second())
        return None


_torch_default_threads: int | None = None


def resolve_threads(threads: int, watch: CpuWatch | None = None) -> tuple[int, str]:
    """``(count, why)``: the intra-op threads a run trains with. ``threads`` > 0 is kept as asked.

    ``0`` (auto): ``OMP_NUM_THREADS`` when it is set (the user's, or torchrun's one per process); else
    torch's own choice (one per physical core, at most the usable ones) less the cores other processes
    keep busy now, as ``watch`` saw them, and at least one. Why: torch's threads work in lock step and
    spin while they wait for each other, so a thread that shares its core with a busy process holds all
    the others back: the fast preset took 15-30x its idle time beside one busy process with two threads
    on a two-core machine, about 1.4x with one thread. The count is part of the arithmetic (matmuls split
    their work by it, so the last bits differ), so a run records it and a resumed run keeps it.

    >>> resolve_threads(3)
    (3, 'asked for')
    """
    import os

    import torch

    if threads > 0:
        return threads, "asked for"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "auto: OMP_NUM_THREADS"
    global _torch_default_threads
    if _torch_default_threads is None:  # torch's choice before anyone changed it (a run sets it below)
        _torch_default_threads = torch.get_num_threads()
    cores = usable_cores()
    own = max(1, min(_torch_default_threads, cores))
    busy = watch.others_busy() if watch is not None else None
    if busy is None:
        return own, "auto: one per core"
    taken = int(busy + 0.35)  # a core counts as taken when another process keeps it busy more than ~2/3 of the time
    count = max(1, min(own, cores - taken))
    if count == own:
        return own, f"auto: one per core, {busy:.1f} of {cores} busy elsewhere"
    return count, f"auto: {busy:.1f} of {cores} cores busy with other processes"
