# devstack's OTLP receiver alone (python -m devstack.otlp): where the services in
# containers send their spans during the container tests, which read them back from
# its /api/spans (the compose profile's collector and Jaeger cannot be pulled there).
# Built by tests/containers/docker-compose.test.yml with infra/devstack as context.
FROM python:3.11-slim
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir \
    opentelemetry-proto==1.45.1 protobuf==7.36.2 orjson==3.13.0 \
 && mkdir -p /opt/receiver/devstack && touch /opt/receiver/devstack/__init__.py \
 && useradd --uid 10001 --no-create-home receiver
COPY src/devstack/otlp.py src/devstack/errors.py /opt/receiver/devstack/
ENV PYTHONPATH=/opt/receiver
USER 10001
EXPOSE 4318
ENTRYPOINT ["/opt/venv/bin/python", "-m", "devstack.otlp", "--host", "0.0.0.0", "--port", "4318"]
