"""`pbx-bridge load` with [[companies.webhooks]]: saved by URL, replaced, checked, secret hidden."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from models import Company, Delivery, Webhook
from pbx_bridge.storage import Database
from tests.setup.conftest import SAMPLE_FILE, Cli

SAMPLE_SECRET = "replace-with-the-output-of-openssl-rand"
CRM_SECRET = "crm-secret-0123456789abcdef"
ERP_SECRET = "erp-secret-0123456789abcdef"

COMPANY = """\
[[companies]]
name = "Окна"
destinations = ["PJSIP/office"]
{company_keys}
"""

CRM_WEBHOOK = f"""
[[companies.webhooks]]
url = "https://crm.okna.example/calls"
secret = "{CRM_SECRET}"
events = ["call.ended"]
"""

ERP_WEBHOOK = f"""
[[companies.webhooks]]
url = "https://erp.okna.example/hook"
secret = "{ERP_SECRET}"
"""


def write_file(tmp_path: Path, *webhooks: str, company_keys: str = "") -> Path:
    path = tmp_path / "setup.toml"
    path.write_text(COMPANY.format(company_keys=company_keys) + "".join(webhooks), encoding="utf-8")
    return path


def webhook_rows(cli: Cli) -> dict[str, tuple]:
    rows = cli.fetch(
        select(Webhook.url, Webhook.id, Webhook.secret, Webhook.events, Webhook.enabled)
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def test_sample_file_webhook_saved(cli: Cli) -> None:
    result = cli.load(SAMPLE_FILE)

    assert result.status == 0, result.err
    rows = cli.fetch(
        select(Company.name, Webhook.url, Webhook.secret, Webhook.events, Webhook.enabled).join(
            Company, Company.id == Webhook.company_id
        )
    )
    assert [tuple(row) for row in rows] == [
        (
            "Окна Москвы",
            "https://crm.okna-moskvy.example/pbx-bridge/calls",
            SAMPLE_SECRET,
            ["call.answered", "call.ended"],
            True,
        )
    ]
    assert "webhooks:  1 created, 0 updated, 0 unchanged, 0 removed" in result.out


def test_second_load_reports_webhook_unchanged(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)
    before = cli.rows()

    result = cli.load(SAMPLE_FILE)

    assert result.status == 0, result.err
    assert cli.rows() == before
    assert "webhooks:  0 created, 0 updated, 1 unchanged, 0 removed" in result.out
    assert "Nothing changed." in result.out


def test_omitted_events_mean_all_events(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_file(tmp_path, ERP_WEBHOOK))

    [events] = cli.fetch(select(Webhook.events))

    assert events == (["call.started", "call.answered", "call.ended"],)


def test_changed_webhook_updated_in_place(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_file(tmp_path, CRM_WEBHOOK))
    [row_id, *_] = webhook_rows(cli)["https://crm.okna.example/calls"]
    changed = (
        CRM_WEBHOOK.replace(CRM_SECRET, "new-crm-secret-0123456789")
        .replace('events = ["call.ended"]', 'events = ["call.started", "call.ended"]')
        + "enabled = false\n"
    )

    result = cli.load(write_file(tmp_path, changed))

    assert result.status == 0, result.err
    assert webhook_rows(cli)["https://crm.okna.example/calls"] == (
        row_id,
        "new-crm-secret-0123456789",
        ["call.started", "call.ended"],
        False,
    )
    assert "webhooks:  0 created, 1 updated, 0 unchanged, 0 removed" in result.out


def test_webhook_dropped_from_file_removed(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_file(tmp_path, CRM_WEBHOOK, ERP_WEBHOOK))
    [erp_id, *_] = webhook_rows(cli)["https://erp.okna.example/hook"]

    result = cli.load(write_file(tmp_path, ERP_WEBHOOK))

    assert result.status == 0, result.err
    assert list(webhook_rows(cli)) == ["https://erp.okna.example/hook"]
    assert webhook_rows(cli)["https://erp.okna.example/hook"][0] == erp_id
    assert "webhooks:  0 created, 0 updated, 1 unchanged, 1 removed" in result.out
    assert 'removed webhook https://crm.okna.example/calls of company "Окна"' in result.out


def test_empty_webhooks_list_removes_all(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_file(tmp_path, CRM_WEBHOOK, ERP_WEBHOOK))

    result = cli.load(write_file(tmp_path, company_keys="webhooks = []"))

    assert result.status == 0, result.err
    assert webhook_rows(cli) == {}
    assert "webhooks:  0 created, 0 updated, 0 unchanged, 2 removed" in result.out


def test_missing_webhooks_key_leaves_webhooks(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_file(tmp_path, CRM_WEBHOOK, ERP_WEBHOOK))
    before = cli.rows()

    result = cli.load(write_file(tmp_path))

    assert result.status == 0, result.err
    assert cli.rows() == before
    assert 'not in the file, left as it is: 2 webhooks of company "Окна"' in result.out
    assert "Nothing changed." in result.out


def test_removed_webhook_keeps_its_outbox_rows(cli: Cli, tmp_path: Path) -> None:
    cli.load(write_file(tmp_path, CRM_WEBHOOK))
    [webhook_id, *_] = webhook_rows(cli)["https://crm.okna.example/calls"]
    asyncio.run(add_pending_delivery(cli.database_url, webhook_id))

    result = cli.load(write_file(tmp_path, company_keys="webhooks = []"))

    assert result.status == 0, result.err
    assert cli.fetch(select(Delivery.webhook_id, Delivery.state)) == [(None, "pending")]


def test_same_url_in_two_companies_accepted(cli: Cli, tmp_path: Path) -> None:
    path = write_file(tmp_path, CRM_WEBHOOK)
    second = COMPANY.format(company_keys="").replace('"Окна"', '"Двери"')
    path.write_text(path.read_text(encoding="utf-8") + second + CRM_WEBHOOK, encoding="utf-8")

    result = cli.load(path)

    assert result.status == 0, result.err
    assert len(cli.fetch(select(Webhook.id))) == 2


async def add_pending_delivery(url: str, webhook_id: int) -> None:
    database = Database(url)
    try:
        async with database.transaction() as session:
            session.add(
                Delivery(
                    receiver="webhook",
                    event="call.ended",
                    webhook_id=webhook_id,
                    target="https://crm.okna.example/calls",
                    payload={"event": "call.ended"},
                )
            )
    finally:
        await database.close()


# -- invalid webhook tables ----------------------------------------------------------------

# (case id, text of CRM_WEBHOOK to replace, replacement, text the message must contain). The
# message must name the replacement's last line, or the webhook's header for an empty one.
BAD_WEBHOOKS = [
    (
        "url-not-http",
        'url = "https://crm.okna.example/calls"',
        'url = "ftp://crm.okna.example/calls"',
        'webhook "ftp://crm.okna.example/calls": url is invalid: expected an http:// or '
        "https:// URL",
    ),
    (
        "url-with-credentials",
        'url = "https://crm.okna.example/calls"',
        'url = "https://admin:pass@crm.okna.example/calls"',
        "credentials in the URL would be logged; use the webhook secret instead",
    ),
    (
        "url-without-host",
        'url = "https://crm.okna.example/calls"',
        'url = "https:///calls"',
        "url is invalid: the host is missing",
    ),
    (
        "url-too-long",
        'url = "https://crm.okna.example/calls"',
        'url = "https://crm.okna.example/' + "a" * 2000 + '"',
        "url is 2025 characters long, expected at most 2000",
    ),
    (
        "url-not-a-string",
        'url = "https://crm.okna.example/calls"',
        "url = 8080",
        "webhook: url is an integer 8080, expected a string",
    ),
    (
        "secret-too-short",
        f'secret = "{CRM_SECRET}"',
        'secret = "short-secret"',
        "secret is 12 characters long, expected a random string of 16 to 200 characters",
    ),
    (
        "secret-too-long",
        f'secret = "{CRM_SECRET}"',
        'secret = "' + "s" * 201 + '"',
        "secret is 201 characters long, expected a random string of 16 to 200 characters",
    ),
    (
        "secret-not-a-string",
        f'secret = "{CRM_SECRET}"',
        "secret = 1234567890123456789",
        "secret is an integer, expected a random string",
    ),
    (
        "secret-missing",
        f'secret = "{CRM_SECRET}"\n',
        "",
        'missing key "secret"',
    ),
    (
        "unknown-event",
        'events = ["call.ended"]',
        'events = ["call.ended", "call.missed"]',
        'event "call.missed" is unknown, expected one of "call.started", "call.answered", '
        '"call.ended"',
    ),
    (
        "events-empty",
        'events = ["call.ended"]',
        "events = []",
        "events is empty, expected a list of one or more of",
    ),
    (
        "enabled-not-boolean",
        'events = ["call.ended"]',
        'events = ["call.ended"]\nenabled = "yes"',
        'enabled is a string "yes", expected true or false',
    ),
    (
        "unknown-key",
        'events = ["call.ended"]',
        'events = ["call.ended"]\nevent = "call.started"',
        'unknown key "event" (did you mean "events"?)',
    ),
    (
        "company-key-after-webhook",
        'events = ["call.ended"]',
        'events = ["call.ended"]\nring_timeout = 30',
        '"ring_timeout" is a key of the company',
    ),
]


def write_bad_file(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """Write a file whose only webhook has `old` replaced, and return it with the expected line."""
    assert CRM_WEBHOOK.count(old) == 1
    webhook = CRM_WEBHOOK.replace(old, new)
    path = write_file(tmp_path, webhook)
    text = path.read_text(encoding="utf-8")
    end = text.index(new) + len(new) if new else text.index("[[companies.webhooks]]")
    return path, text.count("\n", 0, end) + 1


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [case[1:] for case in BAD_WEBHOOKS],
    ids=[case[0] for case in BAD_WEBHOOKS],
)
def test_bad_webhook_names_line_and_problem(
    cli: Cli, tmp_path: Path, old: str, new: str, message: str
) -> None:
    path, line = write_bad_file(tmp_path, old, new)

    result = cli.load(path)

    assert result.status == 2
    assert f"{path}:{line}: " in result.err
    assert message in result.err
    assert "1 problem found, nothing was written" in result.err


@pytest.mark.parametrize(
    ("old", "new"),
    [case[1:3] for case in BAD_WEBHOOKS],
    ids=[case[0] for case in BAD_WEBHOOKS],
)
def test_bad_webhook_writes_nothing(cli: Cli, tmp_path: Path, old: str, new: str) -> None:
    cli.load(write_file(tmp_path, ERP_WEBHOOK))
    before = cli.rows()
    path, _ = write_bad_file(tmp_path, old, new)

    result = cli.load(path)

    assert result.status == 2
    assert cli.rows() == before


def test_duplicate_url_names_both_lines(cli: Cli, tmp_path: Path) -> None:
    path = write_file(tmp_path, CRM_WEBHOOK, CRM_WEBHOOK)

    result = cli.load(path)

    assert result.status == 2
    assert (
        f'{path}:12: company "Окна": webhook "https://crm.okna.example/calls": url is listed '
        "twice for this company (first on line 7)"
    ) in result.err


def test_url_credentials_not_in_messages(cli: Cli, tmp_path: Path) -> None:
    webhook = CRM_WEBHOOK.replace("https://", "https://admin:hook-pass@").replace(CRM_SECRET, "short")
    path = write_file(tmp_path, webhook)

    result = cli.load(path)

    assert result.status == 2
    assert "2 problems found, nothing was written" in result.err
    assert 'webhook "https://***@crm.okna.example/calls"' in result.err
    assert "hook-pass" not in result.err


def test_webhooks_not_an_array_rejected(cli: Cli, tmp_path: Path) -> None:
    path = write_file(tmp_path, company_keys='webhooks = "https://crm.okna.example/calls"')

    result = cli.load(path)

    assert result.status == 2
    assert f'{path}:4: company "Окна": webhooks is a string' in result.err


def test_every_webhook_problem_reported_at_once(cli: Cli, tmp_path: Path) -> None:
    bad_crm = CRM_WEBHOOK.replace(CRM_SECRET, "short-secret")
    bad_erp = ERP_WEBHOOK.replace("https://", "ftp://")
    path = write_file(tmp_path, bad_crm, bad_erp)

    result = cli.load(path)

    assert f"{path}:8: " in result.err
    assert f"{path}:12: " in result.err
    assert "2 problems found, nothing was written" in result.err


# -- the secret is never printed -----------------------------------------------------------


def test_load_output_hides_secret(
    cli: Cli, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pbx_bridge")
    path = write_file(tmp_path, CRM_WEBHOOK)

    outputs = [cli.load(path, "--dry-run"), cli.load(path), cli.load(write_file(tmp_path))]

    for result in outputs:
        assert result.status == 0, result.err
        assert CRM_SECRET not in result.out + result.err
    assert CRM_SECRET not in caplog.text


@pytest.mark.parametrize(
    "secret_line",
    ['secret = "tiny-secret-9"', "secret = 98765432109876", 'secret = ["not-a-secret-98765"]'],
    ids=["too-short", "integer", "array"],
)
def test_problem_message_hides_secret(cli: Cli, tmp_path: Path, secret_line: str) -> None:
    path, _ = write_bad_file(tmp_path, f'secret = "{CRM_SECRET}"', secret_line)
    hidden = secret_line.split("=", 1)[1].strip(' "[]')

    result = cli.load(path)

    assert result.status == 2
    assert "secret is" in result.err
    assert hidden not in result.err


def test_numbers_list_hides_secret(cli: Cli) -> None:
    cli.load(SAMPLE_FILE)

    table = cli.run("numbers", "list")
    rows = cli.run("numbers", "list", "--json")

    assert SAMPLE_SECRET not in table.out + table.err
    assert SAMPLE_SECRET not in rows.out + rows.err
    assert len(json.loads(rows.out)) == 11
