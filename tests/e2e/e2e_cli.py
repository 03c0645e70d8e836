"""Running the `logd` CLI as a subprocess against a test broker (shared by the e2e tests)."""

import os
import subprocess
import sys


def run(broker, *args, stdin=None, bootstrap=True, timeout=60):
    env = dict(os.environ)
    if bootstrap:
        env["LOGD_BOOTSTRAP"] = broker.address
    return subprocess.run([sys.executable, "-m", "logd.cli", *args], input=stdin, capture_output=True,
                          env=env, timeout=timeout)


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def one_line_error(result, *needles):
    """A failed command: non-zero exit, exactly one stderr line, no traceback."""
    assert result.returncode != 0
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("logd: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
