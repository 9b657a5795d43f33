"""`pbx-bridge serve` as an operator runs it: health endpoints, log formats, clean shutdown."""

import asyncio
import json
import os
import signal
import socket
import sys

import aiohttp
import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def start(tmp_path, *args, extra_env=None, port=None):
    port = port or free_port()
    env = {
        **os.environ,
        "PBX_BRIDGE_HTTP_LISTEN": f"127.0.0.1:{port}",
        # A closed port: ARI stays disconnected, which /readyz must report.
        "PBX_BRIDGE_ARI_URL": f"http://127.0.0.1:{free_port()}",
        "PBX_BRIDGE_ARI_PASSWORD": "very-secret-ari",
        **(extra_env or {}),
    }
    env.pop("PBX_BRIDGE_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge", "serve", *args,
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as client:
        for _ in range(200):
            try:
                async with client.get(base + "/healthz") as response:
                    if response.status == 200:
                        return process, base
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    process.kill()
    raise AssertionError("serve did not answer /healthz: " + (await process.stderr.read()).decode())


async def stop(process) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    return process.returncode, stderr.decode()


async def get_json(url):
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status, await response.json()


def test_serve_help_names_log_keys(capsys):
    from pbx_bridge.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())

    assert "default: log.format of the configuration" in help_text
    assert "default: log.level of the configuration" in help_text


async def test_serve_on_sqlite_answers_health(tmp_path):
    process, base = await start(tmp_path)

    health_status, health = await get_json(base + "/healthz")
    ready_status, ready = await get_json(base + "/readyz")
    code, log = await stop(process)

    assert health_status == 200
    assert health == {"status": "ok"}
    assert ready_status == 200
    assert ready["database"] is True
    assert ready["ari"] == {"enabled": True, "connected": False}
    assert (tmp_path / "pbx-bridge.db").exists()
    assert code == 0
    assert "stopped" in log
    assert "event loop uvloop" in log
    assert "very-secret-ari" not in log


async def test_serve_logs_json_lines(tmp_path):
    process, _ = await start(tmp_path, "--log-format", "json", "--no-ari")

    code, log = await stop(process)

    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert code == 0
    assert entries
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(entry["message"] == "pbx-bridge stopped" for entry in entries)


async def test_readyz_without_ari_worker(tmp_path):
    process, base = await start(tmp_path, "--no-ari")

    status, ready = await get_json(base + "/readyz")
    await stop(process)

    assert status == 200
    assert ready["ari"] == {"enabled": False, "connected": False}


async def test_readyz_unavailable_when_database_is_down(tmp_path):
    process, base = await start(
        tmp_path, "--no-ari",
        extra_env={"PBX_BRIDGE_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
                   "PBX_BRIDGE_DATABASE_AUTO_UPGRADE": "false"},
    )

    status, ready = await get_json(base + "/readyz")
    await stop(process)

    assert status == 503
    assert ready["database"] is False


async def test_serve_stops_cleanly_on_sigint(tmp_path):
    process, _ = await start(tmp_path, "--no-ari")

    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), 20)

    assert process.returncode == 0
    assert "pbx-bridge stopped" in stderr.decode()
    assert "Traceback" not in stderr.decode()


async def test_serve_exits_cleanly_when_database_unreachable(tmp_path):
    env = {
        **os.environ,
        "PBX_BRIDGE_DATABASE_URL": "postgresql+asyncpg://nobody:db-password@127.0.0.1:1/none",
        "PBX_BRIDGE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
    }
    env.pop("PBX_BRIDGE_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge", "serve", "--no-ari",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )

    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()

    assert process.returncode == 1
    assert "cannot start:" in log
    assert "Traceback" not in log
    assert "db-password" not in log


async def test_readyz_reports_ari_connected(tmp_path):
    from tests.fake_asterisk import FakeAsterisk

    fake = FakeAsterisk(app="calltracking", username="pbx-bridge", password="very-secret-ari")
    await fake.start()
    try:
        process, base = await start(tmp_path, extra_env={"PBX_BRIDGE_ARI_URL": fake.url})
        try:
            await fake.wait_for(lambda: fake.websocket_count > 0, timeout=20)
            status, ready = await get_json(base + "/readyz")
        finally:
            await stop(process)
    finally:
        await fake.stop()

    assert status == 200
    assert ready["ari"] == {"enabled": True, "connected": True}


async def test_http_processes_share_a_port_with_reuse_port(tmp_path):
    port = free_port()
    shared = {"PBX_BRIDGE_HTTP_REUSE_PORT": "true"}
    first, base = await start(tmp_path, extra_env=shared, port=port)
    second, _ = await start(tmp_path, "--no-ari", "--no-delivery", extra_env=shared, port=port)
    try:
        # start() returned once the first process passed its health check. Wait for the second.
        await _wait_for_line(second.stderr, "HTTP listening")
        assert (await stop(first))[0] == 0
        # With the first process gone, the second one serves the shared port.
        status, body = await get_json(base + "/healthz")
        assert (status, body) == (200, {"status": "ok"})
    finally:
        code, _ = await stop(second)
    assert code == 0


async def test_port_taken_without_reuse_port_fails_to_start(tmp_path):
    port = free_port()
    first, _ = await start(tmp_path, port=port)
    try:
        env = {**os.environ, "PBX_BRIDGE_HTTP_LISTEN": f"127.0.0.1:{port}"}
        env.pop("PBX_BRIDGE_CONFIG", None)
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pbx_bridge", "serve", "--no-ari", "--no-delivery",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(second.communicate(), 30)
    finally:
        await stop(first)
    assert second.returncode == 1
    assert "cannot start" in stderr.decode()


async def _wait_for_line(stream, text: str) -> None:
    async def read() -> None:
        while text not in (await stream.readline()).decode():
            pass

    await asyncio.wait_for(read(), 30)
