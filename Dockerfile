# syntax=docker/dockerfile:1.7
#
# CMB detection service images (docs/deployment.md).
#
#   docker build --target cpu -t cmb-detect:cpu .     # python:3.11-slim + onnxruntime (CPU)
#   docker build --target gpu -t cmb-detect:gpu .     # CUDA 13 + cuDNN 9 runtime + onnxruntime-gpu
#   docker build --target ohif -t cmb-ohif .          # OHIF viewer + DICOMweb proxy (demo/site viewer)
#
# Both images hold only `model` + `service` + `cmb` with their runtime
# dependencies (no torch, no training code paths are imported), the shipped
# ONNX weights from model/weights/ (the build stops if they are missing), run as the unprivileged user `cmb`
# (uid 10001) and answer a HEALTHCHECK on the REST API's /healthz.
# One image serves every role; the command picks it:
#   cmb serve   DICOM listener + REST API + stability monitor + outbox
#               (+ embedded worker when CMB_BROKER_URL is empty)
#   cmb worker  a Celery worker taking jobs from CMB_BROKER_URL

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The CUDA major of the base must be the one onnxruntime-gpu was built for:
# onnxruntime-gpu 1.31.1 (PyPI) links libcudart.so.13 and libcublas.so.13, so it
# needs a CUDA 13 runtime with cuDNN 9 and an NVIDIA driver >= 580 on the host.
# For hosts with an older driver, build with a CUDA 12 base and a CUDA 12 build of
# onnxruntime-gpu (docs/deployment.md, "GPU image and driver").
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG ORT_GPU_VERSION=1.31.1
# The OHIF viewer version: the same prebuilt `@ohif/app` dist that
# tests/deploy/test_ohif_viewer.py checks in a browser (viewer.OHIF_VERSION).
ARG OHIF_VERSION=3.13.2

# ---------------------------------------------------------------------------
# wheel: build the project's wheel once (pure Python: model, service, cmb,
# plus package data: weights, rules, migrations, web page).  training/ and
# evaluation/ are left out of the build context's copy: the runtime never
# imports them (cmb's train/export/evaluate commands say so when run).
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY cmb ./cmb
RUN python -m pip install --no-cache-dir --upgrade pip build \
 && python -m build --wheel --outdir /wheels .

# ---------------------------------------------------------------------------
# venv-cpu: the CPU runtime environment in /opt/cmb.
FROM ${PYTHON_IMAGE} AS venv-cpu
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/cmb \
 && /opt/cmb/bin/pip install --no-cache-dir --upgrade pip \
 && WHEEL=$(ls /wheels/cmb_detect-*.whl) \
 && /opt/cmb/bin/pip install --no-cache-dir "${WHEEL}[cpu]" \
 && /opt/cmb/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
 && /opt/cmb/bin/python -c "from model.onnx_model import default_model_path as p; print('shipped models', p(), p('cmb_candidate_classification'), p('parcellation'))" \
 && find /opt/cmb -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/cmb/lib/python*/site-packages/pip*

# ---------------------------------------------------------------------------
# cpu: the runtime image for CPU-only servers.
FROM ${PYTHON_IMAGE} AS cpu
ARG UID=10001
RUN groupadd --system --gid ${UID} cmb \
 && useradd --system --uid ${UID} --gid cmb --home-dir /data --no-create-home cmb \
 && mkdir -p /data && chown cmb:cmb /data
COPY --from=venv-cpu /opt/cmb /opt/cmb
COPY deploy/healthcheck.py /opt/cmb/healthcheck.py
ENV PATH=/opt/cmb/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CMB_DATA_DIR=/data \
    CMB_API_HOST=0.0.0.0 \
    CMB_API_PORT=8000 \
    CMB_DICOM_PORT=11112 \
    CMB_DEVICE=cpu
USER cmb
WORKDIR /data
VOLUME ["/data"]
EXPOSE 11112 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "/opt/cmb/healthcheck.py"]
ENTRYPOINT ["cmb"]
CMD ["serve"]

# ---------------------------------------------------------------------------
# venv-gpu: the same environment with onnxruntime-gpu, built on the CUDA base
# so that the interpreter matches (Ubuntu 24.04: Python 3.12).
FROM ${CUDA_IMAGE} AS venv-gpu
ARG ORT_GPU_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
RUN python3 -m venv /opt/cmb \
 && /opt/cmb/bin/pip install --no-cache-dir --upgrade pip \
 && WHEEL=$(ls /wheels/cmb_detect-*.whl) \
 && /opt/cmb/bin/pip install --no-cache-dir "${WHEEL}[gpu]" "onnxruntime-gpu==${ORT_GPU_VERSION}" \
 && /opt/cmb/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
 && /opt/cmb/bin/python -c "from model.onnx_model import default_model_path as p; print('shipped models', p(), p('cmb_candidate_classification'), p('parcellation'))" \
 && find /opt/cmb -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/cmb/lib/python*/site-packages/pip*

# ---------------------------------------------------------------------------
# gpu: the runtime image for NVIDIA GPU servers (needs the NVIDIA container
# toolkit on the host; compose reserves the GPU with deploy.resources).
FROM ${CUDA_IMAGE} AS gpu
ARG UID=10001
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid ${UID} cmb \
 && useradd --system --uid ${UID} --gid cmb --home-dir /data --no-create-home cmb \
 && mkdir -p /data && chown cmb:cmb /data
COPY --from=venv-gpu /opt/cmb /opt/cmb
COPY deploy/healthcheck.py /opt/cmb/healthcheck.py
ENV PATH=/opt/cmb/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CMB_DATA_DIR=/data \
    CMB_API_HOST=0.0.0.0 \
    CMB_API_PORT=8000 \
    CMB_DICOM_PORT=11112 \
    CMB_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER cmb
WORKDIR /data
VOLUME ["/data"]
EXPOSE 11112 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "/opt/cmb/healthcheck.py"]
ENTRYPOINT ["cmb"]
CMD ["serve"]

# ---------------------------------------------------------------------------
# ohif: the radiologists' viewer.  The prebuilt OHIF from the npm package
# @ohif/app, our app-config.js, and nginx (unprivileged, :8080) serving it on
# one origin with the PACS's DICOMweb (deploy/nginx/viewer.conf).
FROM node:22-alpine AS ohif-dist
ARG OHIF_VERSION
WORKDIR /ohif
RUN npm pack "@ohif/app@${OHIF_VERSION}" \
 && tar xzf ohif-app-*.tgz \
 && rm ohif-app-*.tgz

FROM nginxinc/nginx-unprivileged:1.27-alpine AS ohif
COPY --from=ohif-dist /ohif/package/dist /usr/share/nginx/html
COPY deploy/ohif/app-config.js /usr/share/nginx/html/app-config.js
COPY deploy/nginx/viewer.conf /etc/nginx/conf.d/default.conf
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/app-config.js"]

