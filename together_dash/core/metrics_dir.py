"""The folder where the web and proxy processes keep their Prometheus series (multiprocess mode).

prometheus_client picks its mode once, when it is first imported, from PROMETHEUS_MULTIPROC_DIR: each
process then writes its counters, histograms and gauges to files of its own in that folder, and a scrape
of any one process sums the files of all of them. asgi.py points its process at the folder before
anything imports prometheus_client; `manage.py bootstrap` empties it before the processes start (files
of processes from an earlier run would otherwise pile up, one set per process id).

Nothing here imports prometheus_client at module level: that would fix its mode before it is chosen.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
# The files prometheus_client writes: <type>_<pid>.db, gauges with their mode, <gauge>_<mode>_<pid>.db.
_SERIES_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_(\d+)\.db$")
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def share_between_processes(path: str) -> None:
    """Make this process write its series under path (nothing, and single-process mode, when empty).

    Call it before prometheus_client is imported. When something imported it first, the process stays
    in the mode it already has, and says so: a scrape of it then shows only its own requests.
    """
    if "prometheus_client" in sys.modules:
        if path and os.environ.get(ENV) != path:
            logger.warning("prometheus_client was imported before %s could be set: this process "
                           "reports only its own series on /metrics", ENV)
        return
    if not path:
        os.environ.pop(ENV, None)
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = path


def active_dir() -> str | None:
    """The folder this process writes its series to, or None in single-process mode."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(ENV) or None


def clear(path: str) -> int:
    """Delete the series files under path (only files named as prometheus_client names them)."""
    folder = Path(path)
    if not path or not folder.is_dir():
        return 0
    removed = 0
    for file in folder.iterdir():
        if _SERIES_FILE.match(file.name):
            file.unlink(missing_ok=True)
            removed += 1
    return removed


def forget_dead_processes(path: str) -> list[int]:
    """Remove the live-gauge files of processes that no longer run; their values are not current.

    Counters and histograms of a dead process stay: they are part of the totals, and dropping them would
    make the sums go down. The folder is one machine's, so a process id can be checked here.
    """
    from prometheus_client import multiprocess

    dead = sorted({
        int(match.group(1))
        for match in map(_LIVE_GAUGE_FILE.match, os.listdir(path))
        if match and not _is_running(int(match.group(1)))
    })
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return dead


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
