"""Benchmarks of the book: training throughput (``python -m bench.throughput``) and time to accuracy
(``python -m bench.time_to_accuracy``). The measuring code lives in :mod:`alexnet_lib.speed`."""
