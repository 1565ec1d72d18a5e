# The bridge as a container (used by compose.yaml). Debian base, so dcmtk is one apt away
# for operators who want the DICOM tools inside the container.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    BRIDGE_DATA_DIR=/var/lib/bridge BRIDGE_MAPPINGS_DIR=/opt/bridge/mappings

WORKDIR /opt/bridge
COPY pyproject.toml constraints.txt README.md ./
COPY bridge ./bridge
COPY mappings ./mappings
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --system --home /var/lib/bridge --create-home bridge
USER bridge
VOLUME ["/var/lib/bridge"]
EXPOSE 2575 11112 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"BRIDGE_HTTP_PORT\",\"8080\")}/health')"
ENTRYPOINT ["bridge"]
CMD ["serve"]
