# syntax=docker/dockerfile:1
# Training image for the retrain-and-export Job (k8s/jobs/retrain): `surrogate data synth`,
# `surrogate train gan`, `surrogate export gan`.
#
#   docker build -f docker/train.Dockerfile -t registry.example.com/surrogate-faces-train:0.1.0 .
#
# torch 2.13.0 from PyPI on Linux x86-64 carries its CUDA runtime as nvidia-* wheels, so the image
# needs only the host's NVIDIA driver (the GPU operator / device plugin provides it).
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BENTOML_DO_NOT_TRACK=true

WORKDIR /opt/surrogate-faces
COPY pyproject.toml README.md ./
COPY surrogate ./surrogate
COPY training ./training
COPY export ./export
COPY service ./service
COPY annotation ./annotation
COPY configs ./configs
RUN pip install ".[train,serve]" && python -c "import torch, onnx, onnxruntime, surrogate.cli"

RUN groupadd --gid 1000 surrogate && useradd --uid 1000 --gid 1000 --no-create-home surrogate
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["surrogate"]
