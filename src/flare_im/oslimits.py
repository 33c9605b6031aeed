"""Process limits a server needs: one file descriptor per connection."""

from __future__ import annotations

import resource


def raise_fd_limit(wanted: int = 1 << 20) -> int:
    """Raise the open-file limit as far as allowed (root may also raise the hard limit); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target_soft, target_hard in ((wanted, max(wanted, hard)), (hard, hard)):
        if target_soft <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target_soft, target_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
