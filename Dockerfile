# syntax=docker/dockerfile:1

# ---- builder: resolve the locked dependencies into /app/.venv ----------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

RUN pip install uv

WORKDIR /app

# Dependencies first, so source edits reuse this layer.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself (README.md is the package's readme, needed to build it).
COPY README.md ./
COPY settle ./settle
RUN uv sync --frozen --no-dev

# ---- runtime -----------------------------------------------------------------
FROM python:3.11-slim

RUN groupadd --system --gid 10001 settle \
    && useradd --system --uid 10001 --gid settle --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin settle

WORKDIR /app

# Code and venv stay root-owned; only var/ is writable by the app user, and only it
# may read var/ (a new named volume takes the mode of what it is mounted over).
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/pyproject.toml /app/README.md /app/
COPY --from=builder /app/settle /app/settle
RUN mkdir -p /app/var && chown settle:settle /app/var && chmod 0700 /app/var

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SETTLE_ENV=production \
    SETTLE_VAR_DIR=/app/var

USER settle

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["settle", "serve", "--host", "0.0.0.0", "--port", "8000"]
