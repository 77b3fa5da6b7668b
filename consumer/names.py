"""Consumer names: unique per process, so no two processes share a pending entries list."""

from __future__ import annotations

import os
import secrets
import socket


def consumer_name(prefix: str = "") -> str:
    """Return ``[prefix-]host-pid-random``; the random part guards against pid reuse."""
    host = socket.gethostname().split(".")[0] or "host"
    name = f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
    return f"{prefix}-{name}" if prefix else name
