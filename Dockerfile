FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY adapter ./adapter
COPY mappings ./mappings
COPY config ./config
COPY migrations ./migrations
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["adapter"]
CMD ["run", "--config", "config/production.example.yaml"]
