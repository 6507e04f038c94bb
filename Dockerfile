# logad worker/scorer image (used by docker-compose.yml). Models are mounted, not baked in, so a new
# model needs no rebuild:  docker build -t logad .
# The default torch wheel from PyPI runs on CPU and uses CUDA when the container gets a GPU. For a
# smaller CPU-only image:  docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# torch (the big one) in its own layer, so code edits do not re-download it.
COPY pyproject.toml README.md ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch --index-url "$TORCH_INDEX_URL"; fi
COPY logad ./logad
COPY logad_cli ./logad_cli
COPY streams ./streams
COPY training ./training
RUN pip install . && useradd --create-home --uid 10001 logad
USER logad

# Web/metrics ports of `logad worker` (6066) and `logad scorer` (6067).
EXPOSE 6066 6067
CMD ["logad", "--help"]
