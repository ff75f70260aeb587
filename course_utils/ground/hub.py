"""Is the Hugging Face Hub usable from here? Offline switches, a quick reachability probe, the local cache."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

HUB_HOST = "huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


def offline_requested() -> bool:
    """True when the user or CI asked for offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def _probe(host: str, timeout: float) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the hub is allowed (not offline) and a TCP connection to it opens within ``timeout``."""
    if offline_requested():
        return False
    return _probe(HUB_HOST, timeout)


def cached_snapshot(repo_id: str, repo_type: str = "model") -> Path | None:
    """The local cache folder of ``repo_id`` if a complete snapshot was downloaded before, else None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, repo_type=repo_type, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure here just means "not cached"
        return None


def token_present() -> bool:
    """Whether huggingface_hub finds a token (never returns or prints it).

    ``huggingface_hub.get_token()`` looks where the Hub's own tools do: ``HF_TOKEN``, the file ``hf auth login``
    writes, and Colab's secrets.
    """
    from huggingface_hub import get_token

    return get_token() is not None
