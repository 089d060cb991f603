# The bot's daemon in a container: CPU torch, a non-root user, the data in a volume.
# README: "Running as a service".
#   docker build -t waifu-gen .
#   docker run -d --name waifu-gen --env-file /etc/waifu-gen/env -v waifu-gen-data:/app/data \
#       --stop-timeout 90 waifu-gen
#   docker run --rm --env-file /etc/waifu-gen/env -v waifu-gen-data:/app/data waifu-gen check
FROM python:3.11-slim

# CPU wheels (~200 MB) by default; the CUDA ones are ~10 times that and need a GPU runtime:
# docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Its own layer, before the code: the largest download is not repeated for a code change.
RUN pip install torch==2.14.1 torchvision==0.29.1 --index-url "${TORCH_INDEX}"
COPY . /app
# Editable: the bot finds its migrations beside the package (bot/db.py).
RUN pip install -e . \
 && useradd --system --uid 10001 --user-group --home-dir /app/data --no-create-home waifu \
 && mkdir -p /app/data \
 && chown waifu:waifu /app/data

# config.yaml's relative paths resolve against /app: the database, the images and the outbox
# land in /app/data/bot. The training faces for the memorisation guard, if wanted:
# -v /path/to/animefaces:/shared/data/animefaces:ro (config.yaml's ../shared/data/animefaces).
VOLUME /app/data
ENV HOME=/app/data
USER waifu

# Tokens come from the environment (docker run --env-file), never from the image.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "bot"]
CMD ["run"]
