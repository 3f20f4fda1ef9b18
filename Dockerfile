# One image for the API and the workers (docker-compose.yml picks the command).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
WORKDIR /srv/mixlab
COPY pyproject.toml README.md ./
COPY app app
COPY workers workers
COPY proxy_models proxy_models
COPY strategies strategies
COPY migrations migrations
COPY clients clients
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ./clients/python .
EXPOSE 8000
CMD ["mixlab", "serve", "--host", "0.0.0.0"]
