"""Losing the broadcast server: webhooks keep committing, subscribers catch up afterwards."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import asyncpg
import pytest

from tests.conftest import free_port, load_event, make_settings, post_event, seed_payment, token_for
from tests.ws_client import GraphQLWebSocket, bearer

PAYMENTS = "subscription { payments { id status } }"
# Once the broadcast server is back, every subscriber must have the current list within this.
CATCH_UP_SECONDS = 15


class RedisServer:
    """A redis-server of the test's own on a free port, with nothing kept on disk."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp_path = tmp_path
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def succeeded(intent_id):
    event = load_event("payment_intent.succeeded")
    event["id"] = f"evt_{intent_id}"
    event["data"]["object"]["id"] = intent_id
    return event


async def wait_for_list(socket, expected):
    deadline = asyncio.get_running_loop().time() + CATCH_UP_SECONDS
    listed = None
    while asyncio.get_running_loop().time() < deadline:
        remaining = deadline - asyncio.get_running_loop().time()
        listed = (await socket.next_data(timeout=remaining))["payments"]
        if listed == expected:
            return listed
    return listed


class TestRedisOutage:
    @pytest.fixture
    def settings(self, database_url, redis_server):
        return make_settings(database_url, broadcast_url=redis_server.url)

    async def test_subscribers_catch_up_after_restart(self, app, client, server_url, redis_server):
        first = await seed_payment(app, intent_id="pi_outage_1")
        second = await seed_payment(app, intent_id="pi_outage_2")
        socket = GraphQLWebSocket(server_url)
        await socket.connect(bearer(token_for("alice")))
        await socket.subscribe(PAYMENTS)
        await socket.next_data()

        await asyncio.to_thread(redis_server.stop)
        during = [await post_event(client, succeeded(f"pi_outage_{index}")) for index in (1, 2)]
        assert [response.status_code for response in during] == [200, 200]
        assert [response.json()["outcome"] for response in during] == ["processed", "processed"]

        await asyncio.to_thread(redis_server.start)
        listed = await wait_for_list(
            socket, [{"id": first[1], "status": "succeeded"}, {"id": second[1], "status": "succeeded"}]
        )
        assert listed == [
            {"id": first[1], "status": "succeeded"},
            {"id": second[1], "status": "succeeded"},
        ]
        await socket.close()


class TestPostgresListenerKilled:
    @pytest.fixture
    def settings(self, database_url, postgres_url):
        return make_settings(database_url, broadcast_url=postgres_url.replace("+asyncpg", ""))

    async def test_subscribers_catch_up_after_kill(self, app, client, server_url, postgres_url):
        _, payment_id = await seed_payment(app, intent_id="pi_pg_killed")
        socket = GraphQLWebSocket(server_url)
        await socket.connect(bearer(token_for("alice")))
        await socket.subscribe(PAYMENTS)
        await socket.next_data()

        admin = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
        killed = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query ILIKE 'LISTEN%' "
            "AND query ILIKE $1",
            f"%{app.state.hub.prefix}%",
        )
        await admin.close()
        assert len(killed) == 1

        response = await post_event(client, succeeded("pi_pg_killed"))
        assert response.json()["outcome"] == "processed"

        listed = await wait_for_list(socket, [{"id": payment_id, "status": "succeeded"}])
        assert listed == [{"id": payment_id, "status": "succeeded"}]
        await socket.close()
