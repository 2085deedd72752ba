"""Interoperability: Keras models and weight files from elsewhere, brought into mnistlab.

>>> from mnistlab.interop import import_keras, load_init_state   # doctest: +SKIP
>>> import_keras("mnist.keras", "runs/keras")                    # doctest: +SKIP
"""

from __future__ import annotations

from mnistlab.interop.formats import ACCEPTED, fit_state, import_keras, load_init_state, sniff

__all__ = ["ACCEPTED", "fit_state", "import_keras", "load_init_state", "sniff"]
