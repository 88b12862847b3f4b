"""`xenofeat view` stopped by a signal sent to it alone (a service manager's SIGTERM, `kill -INT`) stops its Streamlit
server too: the command exits, the port is free again and no process of its group is left. No browser needed."""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers.demo_store import build_random_store
from tests.helpers.served import group_alive, kill_group, port_in_use, start


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_xenofeat_view_stops_its_server(tmp_path, sig):
    build_random_store(tmp_path / "run", 8)
    served = start(tmp_path / "run", tmp_path / "viewer.log")
    try:
        assert port_in_use(served.port)
        assert group_alive(served.proc.pid)
        os.kill(served.proc.pid, sig)  # to the command only, not to its process group
        assert served.proc.wait(30) == 0, (tmp_path / "viewer.log").read_text()[-2000:]
        assert not port_in_use(served.port), "the Streamlit server still listens after `xenofeat view` ended"
        assert not group_alive(served.proc.pid), "a process of `xenofeat view` outlived it"
    finally:
        kill_group(served.proc)
