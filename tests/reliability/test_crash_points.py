"""Crash points: the broker SIGKILLs itself inside each multi-step operation; recovery is
correct (old or new state, never a mix, no acknowledged record lost) and repeatable."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from logd import faults

from broker_process import SPAWN_LOCK, BrokerProcess

from .scenario import BrokerDied, Driver, Model, drive
from .state import recover

#: How long the scenario waits for the background retention/compaction task to reach a
#: point (it runs every 100 ms in these brokers).
BACKGROUND_WAIT_S = 4.0


def _crash_at(tmp_path, point: str, hit: int) -> tuple[Model, str]:
    """Run the scenario on a broker armed at ``point:hit``; once it died, keep a copy of
    the crashed data directory (``copy``) and restart ``logd serve`` on the original
    without the crash point until it serves (the first recovery). Returns the model and
    the broker's log ("" if the point was never reached)."""
    broker = BrokerProcess(tmp_path / "data", tmp_path / "broker.log", retention_check_interval_ms=100)
    broker.spawn({faults.ENV_VAR: f"{point}:{hit}"})
    model = Model()
    driver = None
    try:
        try:
            broker.wait_ready()
            driver = Driver(broker.address, model, lambda: broker.alive)
            drive(driver, BACKGROUND_WAIT_S)
        except BrokerDied:
            pass
        except RuntimeError:  # died while starting up
            model.in_flight = "start-up"
        finally:
            if driver is not None:
                driver.close()
        if broker.alive:
            return model, ""
        assert broker.wait_exit(5) == -9, broker.log_tail()
        log = broker.log_tail()
        shutil.copytree(tmp_path / "data", tmp_path / "copy")
        # Restart without the crash point (and without background retention, which would
        # legitimately change the state): it must recover and serve.
        broker = BrokerProcess(tmp_path / "data", tmp_path / "restart.log", retention_check_interval_ms=3_600_000)
        broker.start()
        return model, log
    finally:
        broker.kill()


#: Broker subprocesses crashing at once (their start-up is the cost: mostly imports).
PARALLEL_RUNS = 4


@pytest.fixture(scope="module")
def crash_runs(request, tmp_path_factory, profile):
    """The crash runs of every selected point, started in the background in test order
    (a few at a time); each test waits for its own: ``{(point, hit): (future, run dir)}``."""
    root = tmp_path_factory.mktemp("crash-points")
    points = [item.callspec.params["point"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_crash_point_recovers" and hasattr(item, "callspec")]
    pool = ThreadPoolExecutor(max_workers=PARALLEL_RUNS, thread_name_prefix="crash-run")
    runs = {}
    for point in points:
        for hit in profile.crash_point_hits(point):
            run = root / f"{point}-{hit}"
            runs[(point, hit)] = (pool.submit(_crash_at, run, point, hit), run)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.timeout(100)
@pytest.mark.parametrize("point", list(faults.CRASH_POINTS))
def test_crash_point_recovers(crash_runs, profile, point):
    """Killed at this point, the broker recovers to the old or the new state of the
    operation it was in (never a mix), keeps every acknowledged record, and a second
    recovery -- even one itself crashed midway -- reaches the same state."""
    for hit in profile.crash_point_hits(point):
        future, run = crash_runs[(point, hit)]
        model, log = future.result(timeout=90)
        if not log:
            assert hit > 1, f"crash point {point} was never reached by the scenario"
            continue  # reached fewer than `hit` times: nothing more to crash
        assert f"crash point {point} reached" in log, log
        data, copy = run / "data", run / "copy"
        with SPAWN_LOCK:  # (see SPAWN_LOCK: other runs fork brokers meanwhile)
            first = recover(data)  # recovered by the restarted broker, then killed: a second recovery
            second = recover(data)
            # Crash the recovery of the copy itself (at its first checkpoint write), then recover it.
            previous = faults.set_hook(faults.raise_at("checkpoint.tmp_written", 1))
            try:
                recover(copy)
                crashed = False
            except faults.CrashPointReached:
                crashed = True
            finally:
                faults.set_hook(previous)
            # A recovery writes a checkpoint when there is a partition to recover: then the
            # crash must have happened, or this part of the test checked nothing.
            assert crashed or not first.topics, "the copy's recovery never reached its checkpoint write"
            again = recover(copy)
        problems = model.verify(first)
        assert not problems, f"after a crash at {point}:{hit} during {model.in_flight!r}: {problems}"
        assert second.topics == first.topics, "a second recovery changed the state"
        assert again.topics == first.topics, f"recovery after a crashed recovery differs ({point}:{hit})"
        assert len(again.leftovers) == len(first.leftovers)
