"""The training engine: ``Trainer`` (the loop), its step strategies, its state, and the data it accepts.

``loop`` holds ``Trainer.fit``; ``steps`` the training step behind one interface; ``state`` the
``TrainState`` and its checkpoint round trip; ``data`` the conversion of whatever ``fit`` is given;
``optim`` the device, optimizers and the learning-rate schedule. See ``mnistlab.engine.loop``.
"""

from __future__ import annotations

from mnistlab.callbacks import LIVE_EVERY, TrainingInterrupted
from mnistlab.devices import pick_device
from mnistlab.engine.loop import RESUME_KEYS, Trainer
from mnistlab.engine.optim import lr_at, make_optimizer
from mnistlab.engine.state import TrainState
from mnistlab.metrics import ACC, History

__all__ = ["ACC", "LIVE_EVERY", "RESUME_KEYS", "History", "TrainState", "Trainer", "TrainingInterrupted", "lr_at",
           "make_optimizer", "pick_device"]  # fmt: skip
