"""logd.faults: crash points armed by the environment kill the process; hooks raise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from logd import faults

_SCRIPT = """
from logd import faults
for i in range(3):
    print("before", i, flush=True)
    faults.crash_point("roll.old_segment_synced")
print("survived", flush=True)
"""


def _run(spec: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"}
    if spec is not None:
        env[faults.ENV_VAR] = spec
    return subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("spec, printed", [(None, 3), ("roll.old_segment_synced", 1),
                                           ("roll.old_segment_synced:2", 2), ("roll.new_segment_created", 3)])
def test_armed_point_sigkills_the_process_at_the_nth_hit(spec, printed):
    """LOGD_CRASH_POINT=name[:n] SIGKILLs the process the n-th time it reaches the point,
    and only that point."""
    result = _run(spec)
    assert result.stdout.count("before") == printed
    if printed == 3:
        assert result.returncode == 0 and "survived" in result.stdout
    else:
        assert result.returncode == -9, result
        assert "crash point roll.old_segment_synced reached" in result.stderr


def test_a_misspelt_point_refuses_to_run():
    """A typo must not silently disarm a crash test."""
    result = _run("roll.no_such_step")
    assert result.returncode == 2 and "unknown crash point" in result.stderr


def test_hooks_raise_at_the_chosen_hit_and_see_every_point():
    """raise_at raises CrashPointReached (a BaseException) at the n-th hit; set_hook
    returns the previous hook."""
    seen: list[str] = []
    crash = faults.raise_at("metadata.renamed", 2)

    def hook(name: str) -> None:
        seen.append(name)
        crash(name)

    previous = faults.set_hook(hook)
    try:
        faults.crash_point("metadata.tmp_written")
        faults.crash_point("metadata.renamed")
        with pytest.raises(faults.CrashPointReached) as info:
            faults.crash_point("metadata.renamed")
        assert not isinstance(info.value, Exception) and info.value.name == "metadata.renamed"
    finally:
        assert faults.set_hook(previous) is hook
    assert seen == ["metadata.tmp_written", "metadata.renamed", "metadata.renamed"]
    assert faults.parse_spec("swap.swap_done:3") == ("swap.swap_done", 3)
