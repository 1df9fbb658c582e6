"""Throughput benchmarks: the same U-Net weights in PyTorch eager and onnxruntime.

Modules, one idea each: `models` (seeded or trained weights, exported through
the project's own export path), `engines` (what is timed), `flops` (work per
slice counted from the ONNX graph), `peak` (the machine's GEMM GFLOP/s in the
same run), `machine` (what ran it), `gate` (the CI ratio gate), `report` (RESULTS.md and
the chart).
"""
