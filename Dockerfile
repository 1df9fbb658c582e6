# mri2mri runtime (CPU): mri2mri-run as a BIDS App. No torch: only numpy, scipy, nibabel,
# DIPY, onnxruntime and the CLI libraries. Build:  docker build -t mri2mri:cpu .
# Run:  docker run --rm -v /data/bids:/data:ro -v /data/out:/out -v /models:/models:ro \
#         mri2mri:cpu /data /out participant --model /models/t1_to_t2.onnx
# About 0.8 GB, estimated (see docs/runtime.md, "Containers").
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY data data
COPY train train
COPY export export
COPY demo demo
COPY starters starters
COPY benchmarks benchmarks
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
# onnxruntime-gpu is what the package asks for on Linux x86_64; it runs on the CPU too.
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --create-home --uid 1000 mri2mri
ENV MPLCONFIGDIR=/tmp/matplotlib \
    OMP_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 1000
WORKDIR /home/mri2mri
ENTRYPOINT ["mri2mri-run"]
CMD ["--help"]
