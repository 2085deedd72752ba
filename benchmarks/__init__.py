"""Benchmarks: ``python -m benchmarks [NAME ...]`` (``make bench``). Each ``bench_<name>.py`` has ``main()``."""
