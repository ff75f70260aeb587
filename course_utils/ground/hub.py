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


def access_problem(repo_id: str, repo_type: str = "model") -> str | None:
    """None when this machine may download ``repo_id`` from the Hub, else one sentence saying why not and what to do.

    Gated repositories (Meta's Llama models, for instance) need an accepted licence and a token that carries it;
    asking once here (``huggingface_hub.auth_check``) replaces the gated-repository traceback that every process of
    a multi-GPU launch would print otherwise. The token is never read into this code or printed.
    """
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    page = f"https://huggingface.co/{repo_id}"
    try:
        auth_check(repo_id, repo_type=repo_type)
    except GatedRepoError:
        if not token_present():
            return (f"{repo_id} is a gated repository and no Hugging Face token was found: accept its licence on "
                    f"{page}, then set HF_TOKEN (or run `hf auth login`) and launch again.")
        return (f"{repo_id} is a gated repository and your Hugging Face token has no access to it yet: request "
                f"access on {page} (approval can take a while), then launch again.")
    except RepositoryNotFoundError:
        return (f"{repo_id} was not found on the Hub, or it is private and your token cannot see it: check the name "
                f"({page}) and your token (HF_TOKEN or `hf auth login`).")
    except Exception as exc:  # noqa: BLE001 - a network error: the launch would fail the same way, so say it once
        return f"could not ask the Hub about {repo_id} ({type(exc).__name__}: {str(exc)[:200]})."
    return None
