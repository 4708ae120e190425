"""The default broker: kombu's filesystem transport, with whole messages only.

kombu writes a message straight into the queue folder under its final name (`<ms>_<uuid>.<queue>.msg`)
and a consumer takes any file with that name, so a worker polling while a message is being written can
take it half written: the JSON does not parse, and the worker stops with "Unrecoverable error:
JSONDecodeError". It happens when a worker publishes while it consumes (a task's retry with a
countdown, or a task that queues another), which is what the alert outbox does.

Here a message is written under a name no consumer takes (`.<uuid>.tmp`) and renamed into place: a
rename in one folder is atomic, so a consumer sees the whole message or none of it. A message that does
not parse all the same (written by another program, or by a kombu without this fix) is moved to the
`corrupt` folder beside the queue and logged by name and size, never by content (task arguments), and
the worker goes on with the next one.

Selected in settings with `CELERY_BROKER_TRANSPORT = "together_dash.core.broker:Transport"`.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps
from kombu.utils.objects import cached_property

logger = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    @cached_property
    def corrupt_folder(self) -> Path:
        folder = self.transport_options.get("corrupt_folder")
        return Path(folder) if folder else Path(self.data_folder_in).parent / "corrupt"

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Write the message under a hidden name, then rename it to the name consumers look for."""
        folder = Path(self.data_folder_out)
        stamp = int(filesystem.monotonic() * 1000)
        name = f"{stamp}_{uuid.uuid4()}.{queue}.msg"
        partial = folder / f".{uuid.uuid4()}.tmp"
        try:
            with open(partial, "wb") as handle:
                handle.write(dumps(payload).encode())
            os.replace(partial, folder / name)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ChannelError(f"Cannot add message {name!r} to the queue folder") from exc

    def _get(self, queue: str) -> Any:
        """The next message of `queue`; one that does not parse is set aside and the next one taken."""
        while True:
            try:
                return super()._get(queue)
            except ValueError as exc:  # json.JSONDecodeError: kombu has already taken the file
                self._set_aside(queue, exc)

    def _set_aside(self, queue: str, exc: ValueError) -> None:
        # kombu read the file into memory and removed it (store_processed off) before parsing, so what
        # is left to keep is the document the error carries.
        document = getattr(exc, "doc", "")
        self.corrupt_folder.mkdir(parents=True, exist_ok=True)
        kept = self.corrupt_folder / f"{uuid.uuid4()}.{queue}.msg"
        kept.write_text(document if isinstance(document, str) else "")
        logger.error(
            "broker: a message on queue %s did not parse (%s, %d characters); kept as %s, going on",
            queue, type(exc).__name__, len(document or ""), kept,
        )


class Transport(filesystem.Transport):
    Channel = Channel
