"""The SMS outbox on the frozen clock: quiet hours, digests, leases and the one allowed resend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, time, timedelta

import pytest

from api import clock
from api.fakes.sms import FakeSmsServer
from api.integrations.sms import SmsResult
from api.models import SmsOutbox, Unit
from api.models.outbox import OutboxStatus
from api.services.context import Services
from api.services.escalation import fire_due_steps
from api.services.outbox import after_quiet_hours, enqueue_sms
from api.sla.policy import QuietHours
from api.workers.sms_claims import UNCONFIRMED_ERROR, claim_next, due_rows
from api.workers.sms_sender import _record, send_due_sms
from tests.support import at, file_cases, make_world


@pytest.fixture(autouse=True)
def _no_new_case_notices(services: Services) -> Iterator[None]:
    # These tests count escalation reminders per phone; new-case notices are tested elsewhere.
    services.settings.notify_new_cases = False
    yield
    services.settings.notify_new_cases = True


async def test_claim_query_skips_locked_rows(clean_db: str) -> None:
    sql = due_rows(at("2025-03-03 10:00")).sql()
    assert "FOR UPDATE SKIP LOCKED" in sql and "ORDER BY" in sql


NIGHT = QuietHours(enabled=True, start=time(22, 0), end=time(7, 0))
LUNCH = QuietHours(enabled=True, start=time(12, 0), end=time(14, 0))


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2025-03-03 21:59:59", "2025-03-03 21:59:59"),
        ("2025-03-03 22:00", "2025-03-04 07:00"),
        ("2025-03-03 23:30", "2025-03-04 07:00"),
        ("2025-03-04 00:00", "2025-03-04 07:00"),
        ("2025-03-04 06:59:59", "2025-03-04 07:00"),
        ("2025-03-04 07:00", "2025-03-04 07:00"),
        ("2025-12-31 23:10", "2026-01-01 07:00"),  # across the year end
    ],
)
def test_after_quiet_hours_crosses_midnight(moment: str, expected: str) -> None:
    assert after_quiet_hours(at(moment), NIGHT) == at(expected)


def test_after_quiet_hours_other_windows_and_zones() -> None:
    assert after_quiet_hours(at("2025-03-03 12:30"), LUNCH) == at("2025-03-03 14:00")
    assert after_quiet_hours(at("2025-03-03 14:00"), LUNCH) == at("2025-03-03 14:00")
    off = QuietHours(enabled=False, start=time(22, 0), end=time(7, 0))
    assert after_quiet_hours(at("2025-03-03 23:00"), off) == at("2025-03-03 23:00")
    # 15:30 UTC is 23:30 in China: quiet hours are China time whatever zone the value is in.
    utc = datetime.fromisoformat("2025-03-03T15:30:00+00:00")
    assert after_quiet_hours(utc, NIGHT) == at("2025-03-04 07:00")


async def _leaders() -> tuple[str, str]:
    county = (await Unit.get(code="430102")).leader_phone
    city = (await Unit.get(code="4301")).leader_phone
    assert county and city
    return county, city


def _per_phone(fake: FakeSmsServer) -> Counter[str]:
    return Counter(m["phone"] for m in fake.received)


async def test_quiet_hours_hold_routine_sms_not_urgent_ones(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    await make_world()
    county, _ = await _leaders()
    clock.freeze(at("2025-03-03 23:00"))
    routine = await enqueue_sms(
        services, phone=county, template="sla_warning", params={"ticket": "x"}, purpose="t"
    )
    urgent = await enqueue_sms(
        services,
        phone=county,
        template="urgent_case",
        params={"ticket": "y"},
        purpose="urgent_case",
        urgent=True,
    )
    assert routine.next_attempt_at == at("2025-03-04 07:00")
    assert urgent.next_attempt_at == at("2025-03-03 23:00")
    assert await send_due_sms(services) == 1
    assert [m["out_id"] for m in sms_fake.received] == [urgent.out_id]
    clock.freeze(at("2025-03-04 06:59"))
    assert await send_due_sms(services) == 0
    clock.freeze(at("2025-03-04 07:00"))
    assert await send_due_sms(services) == 1
    assert sms_fake.received[-1]["out_id"] == routine.out_id


async def test_reminders_for_one_phone_go_out_as_one_digest_per_window(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    county, city = await _leaders()
    tickets = await file_cases(services, world, 3)
    clock.freeze(at("2025-03-03 12:00"))  # the three 签收 deadlines
    await fire_due_steps(services)
    await send_due_sms(services)

    assert _per_phone(sms_fake) == {county: 1, city: 1}
    digests = {d.phone: d for d in await SmsOutbox.filter(template="digest")}
    message = next(m for m in sms_fake.received if m["phone"] == county)
    assert message["template_code"] == "SMS_480000005"
    assert message["params"] == {"count": "3", "tickets": f"{tickets[0]}、{tickets[1]}"}
    assert message["out_id"] == digests[county].out_id
    assert digests[county].biz_id == message["biz_id"]
    reminders = await SmsOutbox.filter(template="sla_overdue")
    assert len(reminders) == 6
    for row in reminders:
        digest = digests[row.phone]
        assert (row.status, row.merged_into_id) == (OutboxStatus.SENT, digest.id)
        assert row.biz_id == digest.biz_id and row.sent_at == digest.sent_at
        assert row.attempts == 0  # never sent on its own

    # Two minutes later a fourth case falls due: its reminders wait for the window to close,
    # an urgent SMS to the same leader does not.
    clock.freeze(at("2025-03-03 10:02"))
    await file_cases(services, world, 1)
    clock.freeze(at("2025-03-03 12:02"))
    await fire_due_steps(services)
    urgent = await enqueue_sms(
        services,
        phone=county,
        template="urgent_case",
        params={"ticket": "z"},
        purpose="urgent_case",
        urgent=True,
    )
    await send_due_sms(services)
    assert [m["out_id"] for m in sms_fake.received[2:]] == [urgent.out_id]
    held = await SmsOutbox.filter(template="sla_overdue", status=OutboxStatus.PENDING)
    assert len(held) == 2 and {r.next_attempt_at for r in held} == {at("2025-03-03 12:05")}
    clock.freeze(at("2025-03-03 12:04:59"))
    assert await send_due_sms(services) == 0
    clock.freeze(at("2025-03-03 12:05"))
    assert await send_due_sms(services) == 2  # one reminder each: sent as it is
    assert _per_phone(sms_fake) == {county: 3, city: 2}
    assert await SmsOutbox.filter(status=OutboxStatus.SENT).count() == 6 + 2 + 2 + 1


async def test_digest_window_zero_sends_each_reminder(
    services: Services, sms_fake: FakeSmsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.settings, "sms_digest_seconds", 0)
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    await file_cases(services, world, 2)
    clock.freeze(at("2025-03-03 12:00"))
    await fire_due_steps(services)
    assert await send_due_sms(services) == 4
    assert not await SmsOutbox.filter(template="digest").exists()


async def test_lost_answer_is_resent_once_with_the_same_out_id(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    await make_world()
    county, _ = await _leaders()
    clock.freeze(at("2025-03-03 10:00"))
    row = await enqueue_sms(
        services, phone=county, template="sla_warning", params={"ticket": "x"}, purpose="t"
    )
    sms_fake.drop_response_next()  # Aliyun takes the message, the answer never arrives
    await send_due_sms(services)
    await row.refresh_from_db()
    assert row.status == OutboxStatus.PENDING and row.uncertain_attempts == 1
    assert row.last_error and row.last_error.startswith("Timeout")
    assert at("2025-03-03 10:00:15") <= row.next_attempt_at <= at("2025-03-03 10:00:18")
    clock.freeze(at("2025-03-03 10:00:18"))
    await send_due_sms(services)
    await row.refresh_from_db()
    assert row.status == OutboxStatus.SENT and row.attempts == 2 and row.last_error is None
    assert [m["out_id"] for m in sms_fake.received] == [row.out_id, row.out_id]


async def test_claim_of_a_dead_worker_is_taken_back_after_its_lease(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    await make_world()
    county, _ = await _leaders()
    clock.freeze(at("2025-03-03 10:00"))
    row = await enqueue_sms(
        services, phone=county, template="sla_warning", params={"ticket": "x"}, purpose="t"
    )
    claimed, _ = await claim_next(services)  # ... and the worker dies before the answer
    assert claimed is not None and claimed.id == row.id
    lease = services.settings.sms_lease_seconds
    clock.advance(timedelta(seconds=lease - 1))
    assert await send_due_sms(services) == 0  # still leased
    clock.advance(timedelta(seconds=1))
    assert await send_due_sms(services) == 1
    await row.refresh_from_db()
    assert row.status == OutboxStatus.SENT
    assert (row.attempts, row.uncertain_attempts) == (2, 1)
    assert [m["out_id"] for m in sms_fake.received] == [row.out_id]


async def test_a_second_unknown_outcome_is_never_resent(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    await file_cases(services, world, 2)
    clock.freeze(at("2025-03-03 12:00"))
    await fire_due_steps(services)
    lease = timedelta(seconds=services.settings.sms_lease_seconds)
    # Two reminders for each leader: two digests, claimed by a worker that dies ...
    digests = [(await claim_next(services))[0] for _ in range(2)]
    assert all(d is not None and d.template == "digest" for d in digests)
    clock.advance(lease)
    # ... taken back once each (the same OutId), by a worker that dies again.
    again = [(await claim_next(services))[0] for _ in range(2)]
    assert {(d.id, d.out_id) for d in again if d} == {(d.id, d.out_id) for d in digests if d}
    clock.advance(lease)
    assert await send_due_sms(services) == 0
    for digest in await SmsOutbox.filter(template="digest"):
        assert digest.status == OutboxStatus.UNCONFIRMED
        assert digest.last_error == UNCONFIRMED_ERROR and digest.uncertain_attempts == 1
        merged = await SmsOutbox.filter(merged_into_id=digest.id)
        assert len(merged) == 2 and {r.status for r in merged} == {OutboxStatus.UNCONFIRMED}
    clock.advance(timedelta(days=1))
    assert await send_due_sms(services) == 0
    assert sms_fake.received == []


async def test_a_digest_aliyun_refuses_falls_back_to_single_reminders(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    clock.freeze(at("2025-03-03 10:00"))
    world = await make_world()
    county, city = await _leaders()
    tickets = await file_cases(services, world, 2)
    clock.freeze(at("2025-03-03 12:00"))
    await fire_due_steps(services)
    sms_fake.fail_next("isv.SMS_TEMPLATE_ILLEGAL")  # the digest template is not approved yet
    await send_due_sms(services)
    refused = await SmsOutbox.get(template="digest", status=OutboxStatus.FAILED)
    assert refused.phone == county  # the first claimed
    assert refused.last_error and refused.last_error.startswith("isv.SMS_TEMPLATE_ILLEGAL")
    await send_due_sms(services)
    reminders = await SmsOutbox.filter(template="sla_overdue", phone=county)
    assert {(r.status, r.merged_into_id, r.attempts) for r in reminders} == {
        (OutboxStatus.SENT, None, 2)
    }
    got = sorted(m["params"]["ticket"] for m in sms_fake.received if m["phone"] == county)
    assert got == sorted(tickets)
    assert _per_phone(sms_fake) == {county: 2, city: 1}  # the city's digest went out as one


async def test_an_ok_arriving_after_the_lease_still_settles_the_row(
    services: Services, sms_fake: FakeSmsServer
) -> None:
    await make_world()
    county, _ = await _leaders()
    clock.freeze(at("2025-03-03 10:00"))
    row = await enqueue_sms(
        services, phone=county, template="sla_warning", params={"ticket": "x"}, purpose="t"
    )
    slow, _ = await claim_next(services)  # worker A: its answer is slower than its lease
    clock.advance(timedelta(seconds=services.settings.sms_lease_seconds))
    other, _ = await claim_next(services)  # worker B takes the row back and resends
    assert slow and other and (slow.attempts, other.attempts) == (1, 2)
    ok = SmsResult(
        ok=True, code="OK", message="OK", biz_id="123^0", transient=False, maybe_delivered=False
    )
    await _record(services, slow, ok)  # A's OK: the message went out
    lost = SmsResult(
        ok=False, code="Timeout", message="", biz_id=None, transient=True, maybe_delivered=True
    )
    await _record(services, other, lost)  # B's answer is lost: it must not undo A's OK
    await row.refresh_from_db()
    assert (row.status, row.biz_id) == (OutboxStatus.SENT, "123^0")
    clock.advance(timedelta(days=1))
    assert await send_due_sms(services) == 0
