"""The call journal: filters, pagination, hostile filter values and CSV/XLSX export."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from tests.admin.conftest import World


async def _calls(world: World, query: str = "", headers: dict | None = None) -> dict:
    response = await world.client.get(f"/api/v1/calls{query}", headers=headers or world.admin)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_viewer_journal_has_own_company_only(world: World) -> None:
    body = await _calls(world, headers=world.viewer)
    assert {item["company_id"] for item in body["items"]} == {world.company_id}
    assert body["total"] == 3


async def test_journal_sorted_newest_first(world: World) -> None:
    body = await _calls(world)
    assert [item["id"] for item in body["items"]] == list(reversed(world.call_ids))


async def test_filter_missed_outcome(world: World) -> None:
    body = await _calls(world, "?outcome=missed")
    assert sorted(item["outcome"] for item in body["items"]) == ["busy", "no-answer"]


async def test_filter_by_source(world: World) -> None:
    body = await _calls(world, f"?source_id={world.source_id}")
    assert [item["id"] for item in body["items"]] == [world.call_ids[1], world.call_ids[0]]


async def test_filter_by_caller_part(world: World) -> None:
    body = await _calls(world, "?caller=1112233")
    assert body["total"] == 2


async def test_filter_by_attribution(world: World) -> None:
    body = await _calls(world, "?attribution=unknown-number")
    assert [item["caller_raw"] for item in body["items"]] == ["anonymous"]


async def test_filter_by_answered_by(world: World) -> None:
    body = await _calls(world, "?answered_by=PJSIP/office")
    assert [item["id"] for item in body["items"]] == [world.call_ids[0]]


async def test_filter_period_in_company_zone(world: World) -> None:
    """10 March 12:00 UTC is 15:00 in Moscow: a Moscow day filter of 10 March includes it."""
    body = await _calls(world, f"?company_id={world.company_id}&from=2026-03-10&to=2026-03-10")
    assert body["total"] == 3
    body = await _calls(world, f"?company_id={world.company_id}&from=2026-03-11")
    assert body["total"] == 0


async def test_pagination_pages_do_not_overlap(world: World) -> None:
    first = await _calls(world, "?page_size=2&page=1&sort=started_at")
    second = await _calls(world, "?page_size=2&page=2&sort=started_at")
    assert [item["id"] for item in first["items"]] == world.call_ids[:2]
    assert [item["id"] for item in second["items"]] == world.call_ids[2:]
    assert first["total"] == 4


async def test_sql_injection_in_caller_is_a_plain_string(world: World) -> None:
    body = await _calls(world, "?caller=' OR 1=1 --")
    assert body["total"] == 0


async def test_like_wildcard_in_caller_is_literal(world: World) -> None:
    body = await _calls(world, "?caller=%25")
    assert body["total"] == 0


async def test_sql_injection_in_sort_rejected(world: World) -> None:
    response = await world.client.get("/api/v1/calls?sort=id;DROP TABLE calls", headers=world.admin)
    assert response.status == 422
    fields = [item["field"] for item in (await response.json())["error"]["fields"]]
    assert fields == ["sort"]


async def test_invalid_filters_reported_field_by_field(world: World) -> None:
    response = await world.client.get("/api/v1/calls?outcome=won&page_size=9999&from=yesterday", headers=world.admin)
    assert response.status == 422
    fields = sorted(item["field"] for item in (await response.json())["error"]["fields"])
    assert fields == ["from", "outcome", "page_size"]


async def test_stored_utm_returned_verbatim_as_json(world: World) -> None:
    body = await _calls(world, "?sort=started_at&page_size=1")
    assert body["items"][0]["session"]["utm_source"] == "<script>alert(1)</script>"


async def test_csv_export_has_bom_and_header(world: World) -> None:
    response = await world.client.get("/api/v1/calls/export.csv", headers={**world.viewer, "Accept-Language": "ru"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    raw = await response.read()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0][:3] == ["ID звонка", "Начало", "Звонивший"]
    assert len(rows) == 4


async def test_csv_export_neutralizes_formulas(world: World) -> None:
    response = await world.client.get("/api/v1/calls/export.csv", headers=world.viewer)
    text = (await response.read()).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    campaigns = [row["utm_campaign"] for row in rows if row["utm_campaign"]]
    assert campaigns == ["'=HYPERLINK(\"http://evil\")"]


async def test_csv_export_local_time(world: World) -> None:
    response = await world.client.get("/api/v1/calls/export.csv?sort=started_at", headers={**world.viewer, "Accept-Language": "en"})
    rows = list(csv.DictReader(io.StringIO((await response.read()).decode("utf-8-sig"))))
    assert rows[-1]["Started"] == "2026-03-10 14:00:00"  # 11:00 UTC in Moscow


async def test_csv_export_semicolon_delimiter(world: World) -> None:
    response = await world.client.get("/api/v1/calls/export.csv?delimiter=semicolon", headers=world.viewer)
    first_line = (await response.read()).decode("utf-8-sig").splitlines()[0]
    assert first_line.count(";") == 17


async def test_xlsx_export_opens_with_rows(world: World) -> None:
    response = await world.client.get("/api/v1/calls/export.xlsx?outcome=answered", headers={**world.viewer, "Accept-Language": "en"})
    assert response.status == 200
    workbook = load_workbook(io.BytesIO(await response.read()))
    rows = list(workbook.active.iter_rows(values_only=True))
    assert rows[0][0] == "Call id"
    assert len(rows) == 2
    assert rows[1][0] == world.call_ids[0]
    assert rows[1][11] == 60
