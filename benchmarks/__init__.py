"""mri2mri.benchmarks: registration and throughput benchmarks (pytest-benchmark)."""
