# syntax=docker/dockerfile:1
# driftline training image: the driftline package with CUDA-enabled torch, for the
# Kubeflow training and tuning components on the GPU node group.
#
#   docker build -f docker/training.Dockerfile -t driftline-training:<tag> .
#
# torch comes from the PyTorch CUDA wheel index at the version constraints.txt pins
# (the dev venv may pin a +cpu build); the CUDA runtime libraries ship inside those
# wheels, and the node's NVIDIA driver comes from the host through the NVIDIA container
# toolkit, so a slim Python base is enough (no pytorch/pytorch or nvidia/cuda base whose
# torch would have to match the pin).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The JRE runs Spark when the Feast offline store is read through it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
# 1. CUDA torch at the pinned version; 2. everything else against the constraints
#    without the torch line, so pip keeps the CUDA build.
RUN torch_version="$(sed -n 's/^torch==\([0-9][0-9.]*\).*/\1/p' constraints.txt)" \
    && test -n "${torch_version}" \
    && pip install --index-url "${TORCH_INDEX_URL}" "torch==${torch_version}" \
    && grep -v -i '^torch==' constraints.txt > /tmp/constraints-notorch.txt \
    && pip install --constraint /tmp/constraints-notorch.txt . \
        "psycopg2-binary" \
        "redis" \
        "s3fs" \
        "boto3" \
    && rm -rf /src /tmp/constraints-notorch.txt

RUN useradd --uid 50000 --gid 0 --home-dir /home/driftline --create-home driftline

ENV DRIFTLINE_HOME=/home/driftline/.driftline \
    DRIFTLINE_FEATURE_REPO=/opt/driftline/feature_repo
COPY --chown=driftline:0 feature_repo/ /opt/driftline/feature_repo/

USER 50000
WORKDIR /home/driftline

CMD ["driftline", "--help"]
