# iotgw gateway image: slim Python, non-root, health-checked.
#   docker build -t iotgw .
#   docker run -p 8080:8080 -e IOTGW_BROKER__URL=mqtt://broker:1883 iotgw
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY dashboard ./dashboard
COPY simulators ./simulators
# uvloop, and asyncpg for history.backend = "postgres" (a cluster's shared history).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[fast,postgres]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin iotgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config.toml /etc/iotgw/config.toml
# History (SQLite) lives in /data: mount a volume there to keep it across containers.
RUN mkdir /data && chown iotgw /data
VOLUME /data
ENV IOTGW_HISTORY__DATA_DIR=/data
USER iotgw
EXPOSE 8080
# Listen on all interfaces inside the container; the broker comes from the environment.
ENV IOTGW_HTTP__HOST=0.0.0.0
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["iotgw"]
CMD ["run", "--config", "/etc/iotgw/config.toml"]
