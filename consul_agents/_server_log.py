"""The logger this package's aiohttp servers (the REST API of ``consul-agents serve``, the liveness health
server) hand to aiohttp.

Anyone who can reach such a server can send it a malformed request: a request line or header over 8 KiB, a
header without a name, an unknown HTTP version. aiohttp answers 400 and logs an ERROR with a traceback
each time, so any client could fill the logs with tracebacks. Here a malformed request is one bounded debug
line; any other exception is logged as aiohttp would (an ERROR with its traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["server_log"]


class _ServerLog(logging.Logger):
    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            self.debug("malformed request answered %s: %.120s", exc.code, exc.message)
            return
        super().exception(msg, *args, **kwargs)


def server_log(parent: str) -> logging.Logger:
    """A logger for aiohttp's ``logger=`` under the package logger ``parent`` (its handlers and level)."""
    logger = _ServerLog(f"{parent}.server")
    logger.parent = logging.getLogger(parent)
    return logger
