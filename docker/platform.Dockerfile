# syntax=docker/dockerfile:1
# driftline platform image: the driftline package, Airflow (with the DAGs baked in),
# MLflow, Feast, Spark (needs a JRE) and the scoring service. One image for the
# Airflow chart, the MLflow server and driftline-serve.
#
#   docker build -f docker/platform.Dockerfile -t driftline-platform:<tag> .
#
# Dependencies install against the repository's constraints.txt, so the image has
# the same versions the tests ran with.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# The platform never trains on a GPU: take torch from the CPU wheel index (smaller
# image; also resolves a "+cpu" pin in constraints.txt).
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=${TORCH_CPU_INDEX_URL}

WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first (cached while only the code changes).
COPY pyproject.toml constraints.txt README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
# The AWS-facing clients the production settings need (s3fs for s3:// lake URIs,
# psycopg2 for PostgreSQL, redis for the Feast online store, the Airflow providers for
# S3 remote logs and Kubernetes) are installed beside the package, all constrained.
RUN pip install --constraint constraints.txt . \
        "apache-airflow-providers-amazon" \
        "apache-airflow-providers-cncf-kubernetes" \
        "apache-airflow-providers-postgres" \
        "psycopg2-binary" \
        "redis" \
        "s3fs" \
        "boto3"

FROM ${PYTHON_IMAGE}

# The JRE runs Spark; curl is only for probes and debugging.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl tini \
    && rm -rf /var/lib/apt/lists/*

# uid 50000 / gid 0 is what the official Airflow chart expects.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home airflow

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    DRIFTLINE_HOME=/opt/airflow/.driftline \
    DRIFTLINE_FEATURE_REPO=/opt/driftline/feature_repo \
    DRIFTLINE_GX_PROJECT_DIR=/opt/driftline/great_expectations

# Declarative project files read at run time (the package finds them through the
# settings above, not through a checkout).
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 feature_repo/ /opt/driftline/feature_repo/
COPY --chown=airflow:0 great_expectations/ /opt/driftline/great_expectations/
COPY --chown=airflow:0 params.yaml /opt/driftline/params.yaml

USER 50000
WORKDIR /opt/airflow

EXPOSE 8000 8080 5000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["driftline", "--help"]
