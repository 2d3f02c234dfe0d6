"""The fleet's copy of Redis's counts: messages, the initial load, expiry, the bound."""

from __future__ import annotations

from authbridge.checks.mirror import Mirror


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_messages_set_and_clear_values() -> None:
    clock = Clock()
    mirror = Mirror(clock)
    mirror.message(b"ip 192.0.2.1 3 60000")
    mirror.message(b"user abcdef 7 900000")
    assert mirror.value("ip", "192.0.2.1", clock.now) == 3
    assert mirror.value("user", "abcdef", clock.now) == 7
    mirror.message(b"ip 192.0.2.1 0 0")  # a success cleared the address
    assert mirror.value("ip", "192.0.2.1", clock.now) == 0
    assert mirror.value("ip", "2001:db8::/64", clock.now) == 0


def test_values_expire_with_the_ttl_redis_gave_them() -> None:
    clock = Clock()
    mirror = Mirror(clock)
    mirror.message(b"ip 192.0.2.1 2 1500")
    clock.now += 1.4
    assert mirror.value("ip", "192.0.2.1", clock.now) == 2
    clock.now += 0.2
    assert mirror.value("ip", "192.0.2.1", clock.now) == 0
    assert "192.0.2.1" not in mirror.tables["ip"]


def test_foreign_or_broken_messages_are_ignored() -> None:
    clock = Clock()
    mirror = Mirror(clock)
    for payload in (b"", b"ip x", b"ip a b c", b"other a 1 1", b"ip a 1 1 extra", b"\xff 1 1 1"):
        mirror.message(payload)
    assert mirror.tables == {"ip": {}, "user": {}}


def test_the_load_never_undoes_a_newer_message() -> None:
    clock = Clock()
    mirror = Mirror(clock)
    mirror.message(b"ip 192.0.2.9 5 60000")
    mirror.begin_load()  # a new subscription forgets the old copy
    assert mirror.value("ip", "192.0.2.9", clock.now) == 0 and not mirror.synced
    mirror.message(b"ip 192.0.2.1 4 60000")  # arrived while the load ran
    mirror.loaded("ip", "192.0.2.1", 3, 60000)  # the load's older read
    mirror.loaded("ip", "192.0.2.2", 1, 60000)
    mirror.loaded("user", "acct", 2, -1)  # no TTL: kept, for a day
    mirror.end_load()
    assert mirror.synced
    assert mirror.value("ip", "192.0.2.1", clock.now) == 4
    assert mirror.value("ip", "192.0.2.2", clock.now) == 1
    assert mirror.value("user", "acct", clock.now + 3600) == 2
    mirror.loaded("ip", "192.0.2.1", 9, 60000)  # after the load, a read is just a read
    assert mirror.value("ip", "192.0.2.1", clock.now) == 9
    mirror.lost()
    assert not mirror.synced


def test_the_tables_are_bounded_expired_first_then_oldest() -> None:
    clock = Clock()
    mirror = Mirror(clock, limit=10)
    for n in range(5):
        mirror.message(b"ip old%d 1 1000" % n)
    clock.now += 2  # the five old ones have expired
    for n in range(8):
        mirror.message(b"ip new%d 1 60000" % n)
    table = mirror.tables["ip"]
    assert len(table) <= 10 and all(name.startswith("new") for name in table)
    for n in range(8, 20):
        mirror.message(b"ip new%d 1 60000" % n)
    assert len(table) <= 10
    assert "new19" in table and "new0" not in table
