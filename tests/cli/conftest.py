from __future__ import annotations

import pytest

from tests.cli.installed import sh


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory):
    """(the log, the printed timeline) of one `selfheal demo`, shared by a module's tests."""
    folder = tmp_path_factory.mktemp("demo")
    proc = sh(folder, "--db", folder / "demo.db", "demo")
    assert proc.returncode == 0, proc.stderr
    return folder / "demo.db", proc.stdout
