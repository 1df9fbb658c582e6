#!/usr/bin/env bash
# CI throughput gate (~40 s on 2 cores): onnxruntime must stay >= 1.4x PyTorch eager
# (small preset, batch 8, same threads, interleaved repeats; see docs/benchmarks.md).
# MRI2MRI_ORT_OPT=disable|untuned runs it with deliberately slow onnxruntime settings.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m mri2mri.benchmarks.throughput.gate "$@"
