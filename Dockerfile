# logad worker/scorer/notify image (used by docker-compose.yml). Models are mounted, not baked in, so
# a new model needs no rebuild:  docker build -t logad .
# Dependencies come from requirements.lock, the versions the test suite ran with. torch (the big
# one, with its CUDA libraries) gets its own layer, the other pinned dependencies the next one, the
# code the last: editing code re-runs only the last layer. The default torch wheel runs on CPU and
# uses CUDA when the container gets a GPU; a CPU-only image (no CUDA libraries, much smaller):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.lock ./
# 1. torch at the locked version (from TORCH_INDEX_URL when given: the CPU build)
RUN torch="$(grep -E '^torch==' requirements.lock)" \
 && if [ -n "$TORCH_INDEX_URL" ]; then pip install "$torch" --index-url "$TORCH_INDEX_URL"; \
    else pip install "$torch" $(grep -E '^(nvidia-|cuda-|triton==)' requirements.lock); fi
# 2. everything else pinned by the lock file (torch and its CUDA libraries are already there)
RUN grep -vE '^(torch==|nvidia-|cuda-|triton==)' requirements.lock > /tmp/rest.txt \
 && pip install -r /tmp/rest.txt && rm /tmp/rest.txt
# 3. logad itself, without touching the pinned dependencies
COPY pyproject.toml README.md ./
COPY logad ./logad
COPY logad_cli ./logad_cli
COPY streams ./streams
COPY training ./training
RUN pip install --no-deps . && useradd --create-home --uid 10001 logad
USER logad

# Web/metrics ports of `logad worker` (6066), `logad scorer` (6067) and `logad notify` (6068).
EXPOSE 6066 6067 6068
CMD ["logad", "--help"]
