"""What we know about each data set: its files, canonical digests, class names, and mirrors."""

from __future__ import annotations

from dataclasses import dataclass

# Keras's names for the four arrays, and the canonical IDX file names that hold them.
PARTS: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    class_names: tuple[str, ...]
    # MD5 of the *uncompressed* IDX content, as published with the data set: mirrors and Debian
    # recompress, so the bytes of a .gz file prove nothing.
    md5: dict[str, str]
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...]
    embedded: bool
    train_count: int = 60000
    test_count: int = 10000

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST handwritten digits",
    class_names=tuple(str(i) for i in range(10)),
    md5={
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    mirrors=(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    system_dirs=("/usr/share/datasets/mnist",),
    embedded=True,
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    title="Fashion-MNIST (Zalando Research)",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    md5={
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    # Debian's dataset-fashion-mnist package installs here.
    system_dirs=("/usr/share/datasets/fashion-mnist", "/usr/share/datasets/fashion_mnist"),
    embedded=False,
)

SPECS: dict[str, DatasetSpec] = {s.name: s for s in (MNIST, FASHION_MNIST)}
ALIASES = {"fashion-mnist": "fashion_mnist", "fashion": "fashion_mnist"}


def get_spec(name: str) -> DatasetSpec | None:
    return SPECS.get(ALIASES.get(name, name))
