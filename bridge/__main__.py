"""``python -m bridge``: the same as the ``bridge`` command."""

from bridge.cli.main import app

app(prog_name="bridge")
