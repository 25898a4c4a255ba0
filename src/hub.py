"""Whether the Hugging Face hub can be reached: decided once per process, in a few seconds.

Why: with no network and no ``HF_HUB_OFFLINE=1`` (a command typed by hand, not through the
Makefile), the hub client retries each lookup with growing pauses and a command spends 26 to 90 s
printing "Retrying in Ns" before failing. One quick connection attempt tells us the hub is out of
reach; the process then switches the hub client to offline mode, so a model that is not on disk
fails at once with the command's one-line error, and one that is cached loads as usual.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_reachable: bool | None = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def ensure_reachable_or_offline(timeout: float = 3.0) -> bool:
    """True if the hub can be used; otherwise put this process in offline mode and return False."""
    global _reachable
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return False
    if _reachable is None:
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        parsed = urlparse(endpoint)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "huggingface.co", port), timeout=timeout).close()
            _reachable = True
        except OSError:
            _reachable = False
    if not _reachable:
        go_offline()
    return _reachable


def go_offline() -> None:
    """Offline mode for this process, also for libraries that read it at import time."""
    for var in _OFFLINE_VARS:
        os.environ[var] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
        datasets.config.HF_DATASETS_OFFLINE = True
    except (ImportError, AttributeError):
        pass
