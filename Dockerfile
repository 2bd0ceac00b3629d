# One image for the daemon (`tms daemon`, with daemon.backend: kubernetes) and the sidecar
# (`python -m sidecar`) that runs beside tritonserver in every server pod.
#
#   docker build -t tms:dev .
#
# Not built here: the machine this was written on has no container engine (docs/kubernetes.md).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tms_core ./tms_core
COPY sidecar ./sidecar
COPY tms_console ./tms_console
RUN python -m venv /opt/tms \
 && /opt/tms/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/tms/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
COPY --from=build /opt/tms /opt/tms
ENV PATH=/opt/tms/bin:$PATH \
    PYTHONUNBUFFERED=1
# The daemon's manifests run it as this user, with its state on a volume at /var/lib/tms.
RUN useradd --uid 10001 --create-home tms \
 && mkdir -p /var/lib/tms \
 && chown tms /var/lib/tms
USER 10001
EXPOSE 30345
ENTRYPOINT []
CMD ["tms", "daemon", "--config=/etc/tms/tms.yaml"]
