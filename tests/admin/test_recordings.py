"""Recordings: authentication, range requests and confinement to the recordings folder."""

from __future__ import annotations

from sqlalchemy import update

from models import Recording
from tests.admin.conftest import World

FILE_SIZE = 4 + 256 * 4


async def _point_recording_at(world: World, name: str, file_format: str = "wav") -> None:
    async with world.database.transaction() as session:
        await session.execute(
            update(Recording).where(Recording.call_id == world.call_ids[0]).values(name=name, format=file_format)
        )


async def test_recording_streams_whole_file(world: World) -> None:
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording", headers=world.viewer)
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/wav"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert len(await response.read()) == FILE_SIZE


async def test_recording_range_request_returns_206(world: World) -> None:
    headers = {**world.viewer, "Range": "bytes=4-7"}
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording", headers=headers)
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 4-7/{FILE_SIZE}"
    assert await response.read() == bytes([0, 1, 2, 3])


async def test_recording_range_outside_file_returns_416(world: World) -> None:
    headers = {**world.viewer, "Range": f"bytes={FILE_SIZE + 10}-"}
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording", headers=headers)
    assert response.status == 416


async def test_recording_download_is_attachment(world: World) -> None:
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording?download=1", headers=world.viewer)
    assert response.headers["Content-Disposition"].startswith("attachment;")


async def test_recording_needs_authentication(world: World) -> None:
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording")
    assert response.status == 401


async def test_recording_of_other_company_is_404(world: World) -> None:
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[3]}/recording", headers=world.viewer)
    assert response.status == 404


async def test_recording_name_with_dotdot_is_not_served(world: World) -> None:
    await _point_recording_at(world, "../secret")
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording", headers=world.viewer)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "recording_unavailable"


async def test_recording_absolute_name_is_not_served(world: World) -> None:
    await _point_recording_at(world, str(world.recordings.parent / "secret"))
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording", headers=world.viewer)
    assert response.status == 404


async def test_recording_symlink_out_of_folder_is_not_served(world: World) -> None:
    (world.recordings / "link.wav").symlink_to(world.recordings.parent / "secret.wav")
    await _point_recording_at(world, "link")
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording", headers=world.viewer)
    assert response.status == 404


async def test_recording_format_with_path_is_not_served(world: World) -> None:
    await _point_recording_at(world, "calltracking/2026/03/10/c1", "../../wav")
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[0]}/recording", headers=world.viewer)
    assert response.status == 404


async def test_encoded_traversal_in_url_is_not_routed(world: World) -> None:
    response = await world.client.get("/api/v1/calls/..%2F..%2Fsecret/recording", headers=world.viewer)
    assert response.status == 404
