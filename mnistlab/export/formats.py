"""The export formats and tensor layouts, as plain names (the CLI lists them without importing torch)."""

FORMATS = ("txt", "npz", "safetensors", "onnx")
# Also in numpy_infer.py, which must stay standalone; tests/test_export.py keeps the two equal.
LAYOUTS = ("pytorch", "keras")
