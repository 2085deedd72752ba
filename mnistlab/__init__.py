"""mnistlab: the MNIST-style image-classification workflow on PyTorch, offline-first, fast and exact."""

__version__ = "0.1.0"
