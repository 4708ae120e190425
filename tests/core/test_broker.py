"""The default broker (core/broker.py): a consumer never takes a message that is still being written."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection
from kombu.exceptions import ChannelError
from kombu.transport import filesystem

from together_dash.core import broker

QUEUE = "celery"
PAYLOAD = {"body": "eyJhcmdzIjogWzFdfQ==", "headers": {"task": "alerts.deliver"}, "properties": {}}


def connection(folder: Path, transport: type) -> Connection:
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return Connection(
        "filesystem://",
        transport=transport,
        transport_options={
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        },
    )


@pytest.fixture
def channels(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A producer's and a consumer's channel on one queue folder, through together-dash's transport."""
    with connection(tmp_path, broker.Transport) as producer:
        with connection(tmp_path, broker.Transport) as consumer:
            yield producer.default_channel, consumer.default_channel


def test_the_settings_select_this_transport_for_the_filesystem_broker_only(settings: Any) -> None:
    from together_dash.celery import app

    on_filesystem = settings.CELERY_BROKER_URL.startswith("filesystem://")
    assert getattr(settings, "CELERY_BROKER_TRANSPORT", None) == (
        "together_dash.core.broker:Transport" if on_filesystem else None
    )
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, broker.Transport) is on_filesystem


def test_a_message_goes_through_whole(channels: tuple[Any, Any]) -> None:
    producer, consumer = channels
    producer._put(QUEUE, PAYLOAD)
    producer._put(QUEUE, {**PAYLOAD, "body": "second"})

    # Ordered by the millisecond they were written in, then by chance (as in kombu): not asserted.
    received = [consumer._get(QUEUE), consumer._get(QUEUE)]
    assert sorted(received, key=lambda message: message["body"]) == [PAYLOAD, {**PAYLOAD, "body": "second"}]
    with pytest.raises(Empty):
        consumer._get(QUEUE)


def test_only_the_named_queue_is_read(channels: tuple[Any, Any]) -> None:
    producer, consumer = channels
    producer._put("other", PAYLOAD)
    with pytest.raises(Empty):
        consumer._get(QUEUE)
    assert consumer._size("other") == 1


def test_kombus_own_transport_hands_a_half_written_message_to_a_consumer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault this module exists for, made to happen every time: kombu's producer has created the
    message file under its final name and not yet written it when the consumer looks."""
    producer, consumer = (connection(tmp_path, filesystem.Transport) for _ in range(2))
    with producer, consumer:
        seen: list[BaseException] = []
        real_lock = filesystem.lock

        def consume_while_locked(handle: Any, flags: int) -> None:
            real_lock(handle, flags)
            try:
                consumer.default_channel._get(QUEUE)
            except ValueError as exc:
                seen.append(exc)

        monkeypatch.setattr(filesystem, "lock", consume_while_locked)
        producer.default_channel._put(QUEUE, PAYLOAD)

    assert len(seen) == 1 and isinstance(seen[0], json.JSONDecodeError)


def test_here_a_message_being_written_is_invisible_to_a_consumer(
    channels: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    producer, consumer = channels
    during_write: list[str] = []
    real_replace = os.replace

    def look_before_the_rename(source: Any, target: Any) -> None:
        assert Path(source).stat().st_size > 0  # written in full under its hidden name
        try:
            consumer._get(QUEUE)
        except Empty:
            during_write.append("empty")
        real_replace(source, target)

    monkeypatch.setattr(broker.os, "replace", look_before_the_rename)
    producer._put(QUEUE, PAYLOAD)

    assert during_write == ["empty"]
    assert consumer._get(QUEUE) == PAYLOAD
    assert not list(Path(producer.data_folder_out).glob(".*.tmp"))


def test_a_message_that_does_not_parse_is_set_aside_and_the_next_one_read(
    tmp_path: Path, channels: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    producer, consumer = channels
    queue_folder = Path(producer.data_folder_out)
    # Sorted first by its name's time stamp, the way kombu orders messages.
    (queue_folder / f"0_broken.{QUEUE}.msg").write_text('{"body": "sk-secret-looking-tex')
    producer._put(QUEUE, PAYLOAD)

    with caplog.at_level(logging.ERROR, logger="together_dash.core.broker"):
        assert consumer._get(QUEUE) == PAYLOAD

    (kept,) = (tmp_path / "corrupt").iterdir()
    assert kept.read_text() == '{"body": "sk-secret-looking-tex'
    assert "did not parse" in caplog.text and str(kept) in caplog.text
    assert "sk-secret" not in caplog.text
    assert not list(queue_folder.glob(f"*.{QUEUE}.msg"))


def test_an_empty_message_file_does_not_stop_the_consumer(channels: tuple[Any, Any]) -> None:
    producer, consumer = channels
    (Path(producer.data_folder_out) / f"0_empty.{QUEUE}.msg").write_bytes(b"")
    with pytest.raises(Empty):
        consumer._get(QUEUE)
    assert len(list(Path(consumer.corrupt_folder).iterdir())) == 1


def test_a_write_that_fails_leaves_nothing_behind_and_says_so(
    channels: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    producer, consumer = channels

    def disk_full(source: Any, target: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(broker.os, "replace", disk_full)
    with pytest.raises(ChannelError, match="Cannot add message"):
        producer._put(QUEUE, PAYLOAD)
    assert list(Path(producer.data_folder_out).iterdir()) == []
    with pytest.raises(Empty):
        consumer._get(QUEUE)


def test_a_worker_publishing_and_consuming_through_celery_round_trips(tmp_path: Path) -> None:
    """kombu's SimpleQueue over the transport: the path Celery's publish and consume take."""
    with connection(tmp_path, broker.Transport) as conn:
        queue = conn.SimpleQueue("together-dash-test")
        for n in range(50):
            queue.put({"n": n})
        received = [queue.get(timeout=2) for _ in range(50)]
        for message in received:
            message.ack()
        queue.close()
    assert sorted(m.payload["n"] for m in received) == list(range(50))
