"""The fuzz harnesses still run: a few hundred inputs of each, in a subprocess (atheris.Fuzz()
ends its process). The long runs are the fuzz stage of .ci/run and tests/fuzz/README.md."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import gradfuse as gf

# .ci/run's fuzz stage installs atheris (and fails if it cannot); without it there is nothing to run.
pytest.importorskip("atheris", reason="atheris is not installed (the fuzz stage of .ci/run installs it)")

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gf.__file__)))
RUNS = 300


@pytest.mark.parametrize("harness", ["fuzz_kernels.py", "fuzz_load.py"])
def test_harness_runs(harness, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, harness),
            f"-atheris_runs={RUNS}",
            "-seed=1",
            f"-artifact_prefix={tmp_path}{os.sep}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert f"Done {RUNS} in" in log, log[-4000:]
    assert not os.listdir(tmp_path), "the harness left a crash file"
