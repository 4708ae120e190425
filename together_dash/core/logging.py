"""A logging filter that keeps secrets out of every log line."""
from __future__ import annotations

import logging

from together_dash.together.redact import redact


class RedactSecretsFilter(logging.Filter):
    """Render the record's message once, scrubbed, so no handler sees a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not drop the line
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
