"""``nextbest outbox list | replay | send --once`` on a real SQLite store, in process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.store import OutboxState, sqlite_stores
from tests.support import EXAMPLE_CATALOG, T0
from tests.webhook_receiver import SECRET, fail_first, receiving

ENV = {"COLUMNS": "80", "NO_COLOR": "1"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An outbox with a message in each state: #1 delivered, #2 and #3 dead, #4 pending,
    #5 delivering."""
    path = tmp_path / "store.sqlite"
    stores = sqlite_stores(path)
    outbox = stores.outbox
    for i in range(1, 6):
        outbox.enqueue("telephony", "telephony", f"callback-{i}", b'{"phone": "+4511"}', T0)
    one, two, three = outbox.claim_due(T0, 3, 60)
    outbox.mark_delivered(one.id, T0 + 1)
    outbox.mark_failed(two.id, two.attempts, "HTTP 422: phone is not E.164", None)
    outbox.mark_failed(three.id, three.attempts, "HTTP 404", None)
    outbox.claim_due(T0 + 2, 2, 60)
    (four, _five) = outbox.messages(OutboxState.DELIVERING)
    outbox.mark_failed(four.id, four.attempts, "HTTP 503", T0 + 30)
    stores.close()
    return path


def where(data: Path) -> list[str]:
    return ["--catalog", str(EXAMPLE_CATALOG), "--data", str(data)]


def test_list_counts_and_shows_each_message(runner: CliRunner, data: Path):
    env = ENV | {
        "NEXTBEST_WEBHOOK_TELEPHONY_URL": "http://x",
        "NEXTBEST_WEBHOOK_TELEPHONY_SECRET": SECRET,
    }
    result = runner.invoke(app, ["outbox", "list", *where(data)], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "1 pending, 1 delivering, 1 delivered, 2 dead",
        "#1 telephony to telephony key 'callback-1': delivered 2026-09-23T10:00:01+00:00, "
        "1 attempt(s)",
        "#2 telephony to telephony key 'callback-2': dead, 1 attempt(s): HTTP 422: phone is "
        "not E.164",
        "#3 telephony to telephony key 'callback-3': dead, 1 attempt(s): HTTP 404",
        "#4 telephony to telephony key 'callback-4': pending, due 2026-09-23T10:00:30+00:00, "
        "1 attempt(s): HTTP 503",
        "#5 telephony to telephony key 'callback-5': delivering, leased until "
        "2026-09-23T10:01:02+00:00, 1 attempt(s)",
    ]
    assert SECRET not in result.output
    assert "+4511" not in result.output  # payloads (phone numbers) are not shown


def test_list_dead_as_json(runner: CliRunner, data: Path):
    result = runner.invoke(
        app, ["outbox", "list", "--state", "dead", "--json", *where(data)], env=ENV
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["counts"] == {"pending": 1, "delivering": 1, "delivered": 1, "dead": 2}
    assert [m["id"] for m in listed["messages"]] == [2, 3]
    assert listed["messages"][0] == {
        "id": 2,
        "channel": "telephony",
        "destination": "telephony",
        "key": "callback-2",
        "state": "dead",
        "attempts": 1,
        "next_attempt_at": "2026-09-23T10:01:00+00:00",
        "last_error": "HTTP 422: phone is not E.164",
        "created_at": "2026-09-23T10:00:00+00:00",
        "delivered_at": None,
        "payload_bytes": 18,
    }


def test_replay_by_id_says_what_it_did_not_replay(runner: CliRunner, data: Path):
    result = runner.invoke(app, ["outbox", "replay", "2", "1", "99", *where(data)], env=ENV)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "replayed 1 message(s)",
        "  #1 not replayed: delivered, not dead",
        "  #99 not replayed: not found",
    ]
    stores = sqlite_stores(data)
    (replayed,) = [m for m in stores.outbox.messages() if m.id == 2]
    stores.close()
    assert (replayed.state, replayed.attempts) == (OutboxState.PENDING, 0)
    assert replayed.next_attempt_at >= time.time() - 60


def test_replay_all_dead(runner: CliRunner, data: Path):
    result = runner.invoke(app, ["outbox", "replay", "--all-dead", *where(data)], env=ENV)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["replayed 2 message(s)"]
    listed = runner.invoke(app, ["outbox", "list", "--state", "dead", *where(data)], env=ENV)
    assert listed.stdout.splitlines() == ["3 pending, 1 delivering, 1 delivered, 0 dead"]


@pytest.mark.parametrize("args", [[], ["3", "--all-dead"]])
def test_replay_needs_ids_or_all_dead(runner: CliRunner, data: Path, args: list[str]):
    result = runner.invoke(app, ["outbox", "replay", *args, *where(data)], env=ENV)
    assert result.exit_code == 2
    assert "name the message ids to replay, or all dead ones" in result.output


def test_no_store_is_said_plainly(runner: CliRunner, tmp_path: Path):
    result = runner.invoke(app, ["outbox", "list", *where(tmp_path / "none.sqlite")], env=ENV)
    assert result.exit_code == 1
    assert "no store at" in result.output


def test_send_once_delivers_what_is_due(runner: CliRunner, data: Path):
    with receiving(time.time, fail_first(0)) as receiver:
        env = ENV | {
            "NEXTBEST_WEBHOOK_TELEPHONY_URL": receiver.url,
            "NEXTBEST_WEBHOOK_TELEPHONY_SECRET": SECRET,
        }
        result = runner.invoke(app, ["outbox", "send", "--once", *where(data)], env=env)
    assert result.exit_code == 0, result.output
    # #4 (its retry was due at T0 + 30, long past on the wall clock) and #5 (its lease ended)
    assert result.stdout.splitlines() == ["claimed 2: 2 delivered, 0 to retry, 0 dead"]
    assert sorted(receiver.acted) == ["callback-4", "callback-5"]
    assert SECRET not in result.output


def test_send_without_a_webhook_refuses_to_start(runner: CliRunner, data: Path):
    result = runner.invoke(app, ["outbox", "send", "--once", *where(data)], env=ENV)
    assert result.exit_code == 1
    assert "no webhook configured" in result.output
