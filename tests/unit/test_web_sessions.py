"""Dashboard sessions: random ids and CSRF tokens, idle and absolute expiry, logout."""

from __future__ import annotations

from cloudburst.web.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_have_their_own_random_id_and_csrf_token() -> None:
    store = SessionStore()
    first, second = store.create(0), store.create(0)
    assert first.id != second.id and first.csrf_token != second.csrf_token
    assert len(first.id) >= 40 and len(first.csrf_token) >= 40
    assert store.get(first.id) is first
    assert first.csrf_matches(first.csrf_token)
    assert not first.csrf_matches(second.csrf_token)
    assert not first.csrf_matches(None) and not first.csrf_matches("")


def test_an_idle_session_ends_and_use_keeps_it_open() -> None:
    clock = Clock()
    store = SessionStore(idle_seconds=60, max_seconds=1000, clock=clock)
    session = store.create(5)
    clock.now += 50
    assert store.get(session.id) is session  # used: the idle timer restarts
    clock.now += 50
    assert store.alive(session.id)
    clock.now += 11
    assert not store.alive(session.id)  # alive() did not count as a use
    assert store.get(session.id) is None
    assert store.get(session.id) is None and len(store) == 0


def test_a_session_ends_after_its_maximum_life_however_used() -> None:
    clock = Clock()
    store = SessionStore(idle_seconds=60, max_seconds=100, clock=clock)
    session = store.create(5)
    for _ in range(3):
        clock.now += 40
        store.get(session.id)
    assert store.get(session.id) is None


def test_logout_and_unknown_ids() -> None:
    store = SessionStore()
    session = store.create(1)
    other = store.create(2)
    store.end(session.id)
    assert store.get(session.id) is None
    assert store.get("no-such-session") is None and store.get(None) is None
    store.end_user(2)
    assert store.get(other.id) is None
