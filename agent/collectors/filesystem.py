"""Space used per mounted filesystem.

``disk_partitions(all=False)`` already leaves out most pseudo filesystems; read-only images
(squashfs: snaps) and memory-backed ones (tmpfs and friends) are dropped here too. A mount that
cannot be read (permissions, a vanished mount point) is skipped on its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psutil

from agent.collectors.cpu import pct
from schemas.metrics import FsUsage

if TYPE_CHECKING:
    from agent.collectors.registry import SampleParts

logger = logging.getLogger(__name__)

SKIP_FSTYPES = frozenset({
    "squashfs", "tmpfs", "devtmpfs", "ramfs", "iso9660", "udf", "proc", "sysfs", "devpts",
    "cgroup", "cgroup2", "autofs", "nsfs", "tracefs", "debugfs", "securityfs", "efivarfs",
})


def _usage(mount: str, device: str, fstype: str) -> FsUsage | None:
    try:
        usage = psutil.disk_usage(mount)
    except OSError:  # PermissionError included
        logger.debug("cannot read usage of %s", mount, exc_info=True)
        return None
    return FsUsage(mount=mount, device=device, fstype=fstype, total_bytes=usage.total,
                   used_bytes=usage.used, used_pct=pct(usage.percent))


class FilesystemCollector:
    name = "filesystem"

    def collect(self, parts: SampleParts, now: float) -> None:
        seen: set[str] = set()
        found: list[FsUsage] = []
        for part in psutil.disk_partitions(all=False):
            if part.fstype in SKIP_FSTYPES or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            usage = _usage(part.mountpoint, part.device, part.fstype)
            if usage is not None:
                found.append(usage)
        parts.filesystems = found
