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
