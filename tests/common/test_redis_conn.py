"""common.redis_conn: every Redis client rexlabel opens gives up on a silent Redis.

A fake Redis accepts TCP connections and never answers (a paused container, a
half-open connection). Each client -- the backend's queue and health check,
bulk jobs, the app's state store, the metrics scrape, the doctor and the
worker -- must raise redis' TimeoutError/ConnectionError instead of hanging.
The call runs in a thread joined with a limit far above the socket timeouts
(set small here): a client without timeouts would still be waiting.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import redis_conn
from common.redis_conn import redis_connection

SMALL_TIMEOUT_S = 0.3
"""The per-reply timeout the tests set: the silent server answers nothing."""
JOIN_LIMIT_S = 60.0
"""Far above every socket timeout here; a client still blocked then hangs."""


class SilentRedis:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"redis://:secret-pw@127.0.0.1:{self.sock.getsockname()[1]}/0"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentRedis]:
    server = SilentRedis()
    yield server
    server.close()


@pytest.fixture
def small_timeouts(monkeypatch):
    monkeypatch.setattr(redis_conn, "COMMAND_TIMEOUT_S", SMALL_TIMEOUT_S)


def _outcome(call: Callable[[], Any]) -> Any:
    """What ``call`` returned or raised, from a thread that must end in time."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # reported to the test below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(JOIN_LIMIT_S)
    assert not thread.is_alive(), "the Redis client hangs on a silent server"
    return box


def _queue_client(url: str) -> Any:
    from backend.queue import RQRunner

    return RQRunner.from_url(url).connection


def _health_client(url: str) -> Any:
    from backend.queue import RQRunner

    return RQRunner.from_url(url).health_connection


def _bulk_client(url: str) -> Any:
    from backend.bulk.store import redis_connection as bulk_connection

    return bulk_connection(url)


def _app_store_client(url: str) -> Any:
    from backend.app import create_app
    from backend.queue import InProcessRunner

    app = create_app(
        {"REDIS_URL": url, "REXLABEL_ENGINE": "openai"},
        runner=InProcessRunner(),
        load_model=False,
    )
    return app.extensions["rexlabel"].store.connection


def _metrics_client(url: str) -> Any:
    from common.metrics import redis_from_settings

    return redis_from_settings({"REDIS_URL": url})()


def _worker_client(url: str) -> Any:
    from worker.process import worker_connection

    return worker_connection(url, worker_ttl=1)


CLIENTS = {
    "queue": _queue_client,
    "health": _health_client,
    "bulk jobs": _bulk_client,
    "app state store": _app_store_client,
    "metrics": _metrics_client,
    "worker": _worker_client,
}


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_each_client_gives_up_on_a_silent_redis(name, silent, small_timeouts):
    client = CLIENTS[name](silent.url)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] and kwargs["socket_connect_timeout"]
    assert kwargs["password"] == "secret-pw"  # REDIS_URL's password is used
    box = _outcome(client.ping)
    assert isinstance(box.get("error"), RedisTimeoutError | RedisConnectionError), box


def test_a_blocking_read_waits_its_block_then_gives_up(silent, small_timeouts):
    """XREAD BLOCK of the queue's wait slice is not cut short by the timeout."""
    from backend.queue import WAIT_SLICE_S

    client = _queue_client(silent.url)
    assert client.connection_pool.connection_kwargs["socket_timeout"] > WAIT_SLICE_S
    box = _outcome(lambda: client.xread({"k": "0-0"}, block=int(WAIT_SLICE_S * 1000)))
    assert isinstance(box.get("error"), RedisTimeoutError), box


def test_doctor_reports_a_silent_redis(silent):
    from backend.doctor.report import Status
    from backend.doctor.workers import check_redis

    box = _outcome(lambda: check_redis(silent.url))
    (check,) = box["value"]
    assert check.status is Status.FAIL and "cannot reach Redis" in check.detail
    assert "secret-pw" not in check.detail


def test_timeouts_come_from_named_defaults():
    client = redis_connection("redis://127.0.0.1:1/0", purpose="test")
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == redis_conn.COMMAND_TIMEOUT_S
    assert kwargs["socket_connect_timeout"] == redis_conn.CONNECT_TIMEOUT_S
    assert kwargs["health_check_interval"] == redis_conn.HEALTH_CHECK_INTERVAL_S
    blocking = redis_connection("redis://127.0.0.1:1/0", purpose="test", blocking=15)
    timeout = blocking.connection_pool.connection_kwargs["socket_timeout"]
    assert timeout == redis_conn.COMMAND_TIMEOUT_S + 15
    short = redis_connection("redis://127.0.0.1:1/0", purpose="test", timeout=0.3)
    assert short.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.3


def test_a_bad_url_names_the_client_and_hides_the_password():
    with pytest.raises(ValueError, match="bulk jobs") as caught:
        redis_connection("http://:hunter2-pw@redis:6379/0", purpose="bulk jobs")
    assert "hunter2-pw" not in str(caught.value)
    with pytest.raises(ValueError, match="timeouts must be positive"):
        redis_connection("redis://127.0.0.1:1/0", purpose="test", timeout=0)
