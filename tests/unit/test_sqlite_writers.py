"""The in-process writer queue of a SQLite store (adapter.store.sqlite_writers): taken by the first
writing statement, given back by commit, rollback or a closed connection, never by a read."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from adapter.store.db import make_engine
from adapter.store.sqlite_writers import _lock_for


@pytest.fixture
def store(tmp_path: Path) -> tuple[Engine, threading.Lock]:
    path = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE rows (id INTEGER PRIMARY KEY, who TEXT)"))
    yield engine, _lock_for(str(path.resolve()))
    engine.dispose()


def test_first_write_takes_the_lock_and_commit_gives_it_back(store) -> None:
    engine, lock = store
    with engine.connect() as connection:
        connection.execute(text("SELECT count(*) FROM rows")).scalar()
        assert not lock.locked(), "a read must not queue writers"
        connection.execute(text("INSERT INTO rows (who) VALUES ('a')"))
        assert lock.locked()
        connection.execute(text("UPDATE rows SET who = 'b'"))  # the same transaction: taken once
        connection.commit()
        assert not lock.locked()


def test_rollback_and_a_failed_statement_give_it_back(store) -> None:
    engine, lock = store
    with engine.connect() as connection:
        connection.execute(text("INSERT INTO rows (who) VALUES ('a')"))
        connection.rollback()
        assert not lock.locked()
    with pytest.raises(Exception):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO rows (id, who) VALUES (1, 'x')"))
            connection.execute(text("INSERT INTO rows (id, who) VALUES (1, 'again')"))  # primary key clash
    assert not lock.locked()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM rows")).scalar() == 0


def test_a_connection_returned_without_commit_gives_it_back(store) -> None:
    engine, lock = store
    connection = engine.connect()
    connection.execute(text("INSERT INTO rows (who) VALUES ('a')"))
    connection.close()  # the pool resets (rolls back) the connection
    assert not lock.locked()
    connection = engine.connect()
    connection.execute(text("INSERT INTO rows (who) VALUES ('b')"))
    connection.invalidate()  # a connection found broken is thrown away
    assert not lock.locked()
    connection.close()


def test_two_engines_on_one_file_share_the_queue_and_every_write_lands(tmp_path: Path) -> None:
    """Intake's durable engine and the dispatcher's engine write the same file from several threads."""
    path = tmp_path / "store.db"
    intake, dispatcher = make_engine(f"sqlite:///{path}", durable_commits=True), make_engine(f"sqlite:///{path}")
    with dispatcher.begin() as connection:
        connection.execute(text("CREATE TABLE rows (id INTEGER PRIMARY KEY, who TEXT)"))
    errors: list[BaseException] = []

    def write(engine: Engine, who: str) -> None:
        try:
            for _ in range(100):
                with engine.begin() as connection:
                    connection.execute(text("INSERT INTO rows (who) VALUES (:who)"), {"who": who})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(engine, f"{name}{i}"))
               for i in range(3) for name, engine in (("intake", intake), ("dispatch", dispatcher))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with dispatcher.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM rows")).scalar() == 600
    assert not _lock_for(str(path.resolve())).locked()
    intake.dispose()
    dispatcher.dispose()
