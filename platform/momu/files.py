"""Small file helpers shared by the savers."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status; elsewhere os.umask's set-and-restore,
    which is not thread-safe for the instant it takes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_like_umask(path: str | Path) -> None:
    """safetensors writes its files 0600 whatever the umask. Give a saved weights file the mode any other new file
    gets here: a model on a shared volume must be readable by the cluster's workers and by other users."""
    os.chmod(path, 0o666 & ~current_umask())
