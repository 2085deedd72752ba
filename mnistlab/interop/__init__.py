"""Interoperability: Keras models and weight files from elsewhere, brought into mnistlab.

>>> from mnistlab.interop import import_keras, load_init_state   # doctest: +SKIP
>>> import_keras("mnist.keras", "runs/keras")                    # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnistlab.interop.formats import (
        ACCEPTED,
        config_for_init,
        fit_state,
        import_keras,
        init_architecture,
        load_init_state,
        sniff,
    )

# Imported on first use, so ``mnistlab --help`` and the CLI's argument parsing need no torch.
_LAZY = {"ACCEPTED", "config_for_init", "fit_state", "import_keras", "init_architecture", "load_init_state", "sniff"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from mnistlab.interop import formats

        return getattr(formats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ACCEPTED", "config_for_init", "fit_state", "import_keras", "init_architecture", "load_init_state", "sniff"]
