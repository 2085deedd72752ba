"""Device choice: ``auto`` takes CUDA, then MPS, then the CPU; a missing device is a one-line error.

No Apple or CUDA machine runs these tests, so the two availability queries are stood in for; the
choice logic itself (``pick_device``, ``distributed.device_for``, the config check) runs unchanged.
"""

from __future__ import annotations

import os

import pytest
import torch

from mnistlab import devices, distributed
from mnistlab.config import TrainConfig
from mnistlab.errors import ConfigError
from tests.conftest import run_cli


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """``machine(cuda=..., mps=...)`` makes this process see those devices."""

    def set_(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(devices, "cuda_available", lambda: cuda)
        monkeypatch.setattr(devices, "mps_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda: bool, mps: bool, expected: str) -> None:
    machine(cuda=cuda, mps=mps)
    assert devices.pick_device("auto") == torch.device(expected)
    assert devices.pick_device() == torch.device(expected)


def test_asked_for_devices_that_exist(machine) -> None:
    machine(cuda=True, mps=True)
    assert devices.pick_device("mps") == torch.device("mps")
    assert devices.pick_device("cuda:1") == torch.device("cuda", 1)
    assert devices.pick_device("cpu") == torch.device("cpu")


def test_missing_mps_is_the_same_one_line_error_as_missing_cuda(machine) -> None:
    machine(cuda=False, mps=False)
    with pytest.raises(ConfigError) as cuda_err:
        devices.pick_device("cuda")
    with pytest.raises(ConfigError) as mps_err:
        devices.pick_device("mps")
    assert str(cuda_err.value) == "device 'cuda' asked for, but CUDA is not available here (use --device cpu)"
    assert str(mps_err.value) == (
        "device 'mps' asked for, but MPS (Apple GPU) is not available here (use --device cpu)"
    )
    assert "\n" not in str(mps_err.value)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:", "cuda:x", "mps:0", "", "CPU"])
def test_unknown_names_are_refused_by_the_config_and_by_pick_device(name: str) -> None:
    assert not devices.valid_device_name(name)
    with pytest.raises(ConfigError, match=r"device must be auto, cpu, cuda, cuda:N or mps, got"):
        TrainConfig(device=name).validate()
    with pytest.raises(ConfigError, match=r"device must be auto, cpu, cuda, cuda:N or mps, got"):
        devices.pick_device(name)


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_config_accepts_every_device_name(name: str) -> None:
    TrainConfig(device=name).validate()  # whether this machine has it is decided when training starts


def test_several_processes_never_pick_mps(machine) -> None:
    # gloo and nccl carry no MPS tensors: DDP on an Apple laptop runs on its CPU.
    machine(cuda=False, mps=True)
    assert distributed.device_for("auto", 0, nproc=2) == torch.device("cpu")
    with pytest.raises(ConfigError, match="trains in one process only"):
        distributed.device_for("mps", 0, nproc=2)
    machine(cuda=False, mps=False)
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        distributed.device_for("cuda", 0, nproc=2)


def test_mps_reports_what_torch_says() -> None:
    # The real query, unpatched: on this machine it must agree with torch itself.
    assert devices.mps_available() == torch.backends.mps.is_available()
    assert devices.cuda_available() == torch.cuda.is_available()


def test_cli_device_mps_without_an_apple_gpu_is_one_line(tmp_path) -> None:
    if torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    r = run_cli("train", "--device", "mps", "--epochs", "1", "--limit-train", "100", "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "mnistlab: error: device 'mps' asked for, but MPS (Apple GPU) is not available here (use --device cpu)"
    )
    assert not (tmp_path / "r").exists()


def test_cli_help_lists_mps() -> None:
    r = run_cli("train", "--help")
    assert r.returncode == 0
    assert "mps" in r.stdout


def test_metric_sums_avoid_float64_on_mps_only() -> None:
    # MPS has no float64: the engine's running sums use float32 there, float64 everywhere else.
    assert devices.accumulator_dtype(torch.device("mps")) == torch.float32
    assert devices.accumulator_dtype(torch.device("cpu")) == torch.float64
    assert devices.accumulator_dtype(torch.device("cuda", 0)) == torch.float64


# -- precision by capability (issue 16): the capability queries are patched, the choice logic is not -----


def _cpu_with(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


def test_auto_precision_is_fp32_on_a_cpu_without_bf16_units(monkeypatch) -> None:
    import torch

    _cpu_with(monkeypatch, amx=False, avx512_bf16=False)
    precision, why = devices.resolve_precision("auto", torch.device("cpu"))
    assert precision == "fp32" and "no native bf16 units" in why


@pytest.mark.parametrize(("amx", "avx512_bf16", "named"), [(True, False, "AMX"), (False, True, "AVX512-BF16")])
def test_auto_precision_is_bf16_where_bf16_units_exist(monkeypatch, amx: bool, avx512_bf16: bool, named: str) -> None:
    import torch

    _cpu_with(monkeypatch, amx=amx, avx512_bf16=avx512_bf16)
    precision, why = devices.resolve_precision("auto", torch.device("cpu"))
    assert precision == "bf16" and named in why


def test_explicit_precision_wins_and_auto_reaches_the_trainer(monkeypatch) -> None:
    import torch

    from mnistlab.engine import Trainer
    from mnistlab.models import mlp

    _cpu_with(monkeypatch, amx=False, avx512_bf16=False)
    assert devices.resolve_precision("bf16", torch.device("cpu")) == ("bf16", "asked for")
    assert Trainer(mlp(), device="cpu", precision="auto").precision == "fp32"
    _cpu_with(monkeypatch, amx=True, avx512_bf16=True)
    assert Trainer(mlp(), device="cpu", precision="auto").precision == "bf16"
    assert Trainer(mlp(), device="cpu", precision="fp32").precision == "fp32"
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        devices.resolve_precision("fp16", torch.device("cpu"))


def test_a_run_records_what_auto_chose(monkeypatch, tmp_path) -> None:
    import json

    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    _cpu_with(monkeypatch, amx=False, avx512_bf16=False)
    config = from_preset("best", epochs=1, limit_train=256, limit_test=256, val_split=256, batch_size=128, device="cpu")
    assert config.precision == "auto"
    train_run(config, tmp_path / "run", verbose=0)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "fp32"


# -- threads by the cores that are free ------------------------------------------------------------


class _Saw(devices.CpuWatch):
    """A watch that saw ``busy`` cores busy elsewhere (the measurement stood in for; the choice is the real one)."""

    def __init__(self, busy: float | None) -> None:
        self.busy = busy

    def others_busy(self) -> float | None:
        return self.busy


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [(2, 0.0, 2), (2, 0.3, 2), (2, 0.9, 1), (2, 1.0, 1), (2, 2.5, 1), (8, 3.0, 5), (1, 0.0, 1), (2, None, 2)],
)
def test_auto_threads_leave_the_busy_cores_to_their_owners(monkeypatch, cores: int, busy, expected: int) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "usable_cores", lambda: cores)
    monkeypatch.setattr(devices, "_torch_default_threads", cores)  # torch's own choice: one per core
    count, why = devices.resolve_threads(0, _Saw(busy))
    assert count == expected
    assert why.startswith("auto")
    if expected < cores:
        assert f"{busy:.1f} of {cores} cores busy with other processes" in why


def test_explicit_threads_and_omp_num_threads_win(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert devices.resolve_threads(0, _Saw(5.0)) == (3, "auto: OMP_NUM_THREADS")
    assert devices.resolve_threads(2, _Saw(5.0)) == (2, "asked for")


def test_the_watch_sees_a_real_busy_process() -> None:
    import subprocess
    import sys
    import time

    if devices._cpu_ticks() is None:
        pytest.skip("no /proc here")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        watch = devices.CpuWatch()
        t = time.perf_counter()
        while time.perf_counter() - t < 0.4:  # this process's own work in the window is not counted
            pass
        seen = watch.others_busy()
    finally:
        busy.kill()
        busy.wait()
    # The spin loop has a core of its own, or at worst shares one with this loop and a test worker.
    assert seen is not None and seen >= 0.5, seen


def test_a_run_records_its_threads_and_a_resumed_run_keeps_them(monkeypatch, tmp_path) -> None:
    import json

    from mnistlab.config import from_preset
    from mnistlab.runs import train_run

    out = tmp_path / "run"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what auto takes when it is set (torchrun sets it, too)
    config = from_preset("fast", epochs=1, limit_train=512, limit_test=256, val_split=0, schedule="constant")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert train_run(config, out, verbose=0)["threads"] == 1
        assert torch.get_num_threads() == 2  # the caller's (a notebook's) count is given back
    finally:
        torch.set_num_threads(before)
    assert json.loads((out / "config.json").read_text())["threads"] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # another load on resume: the run keeps its count all the same
    result = train_run(None, out, resume=True, overrides={"epochs": 2}, verbose=0)
    assert result["threads"] == 1
    assert json.loads((out / "config.json").read_text())["threads"] == 1


# One training step of the fast preset on MNIST in a fresh process, two threads: the weights' digest. The lean
# step's exp is MKL's vector math, whose first call from two threads at once left 5 of 16 such processes
# with other last bits before devices.warm_vector_math (8 fresh processes all alike by chance: ~5%).
FIRST_STEP = """
import hashlib, os, sys
import torch
from mnistlab.callbacks import Callback
from mnistlab.config import from_preset
from mnistlab.engine import Trainer
from mnistlab.runs import build_for, load_dataset
torch.set_num_threads(2)
class FirstStep(Callback):
    def on_train_batch_end(self, batch, logs=None):
        print(hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest())
        sys.stdout.flush()
        os._exit(0)
config = from_preset("fast")
ds = load_dataset(config, progress=False)
torch.manual_seed(0)
model = build_for(config, ds)
Trainer(model, **{**config.trainer_kwargs(), "device": "cpu"}, verbose=0).fit(
    ds.x_train, ds.y_train, batch_size=256, epochs=1, validation_split=config.val_split, callbacks=[FirstStep()])
"""


def test_every_process_computes_the_same_first_step() -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    digests = []
    for _ in range(8):  # one after another: the race needs both cores free for the two threads
        p = subprocess.run([sys.executable, "-c", FIRST_STEP], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        digests.append(p.stdout.strip())
    assert len(set(digests)) == 1, digests
