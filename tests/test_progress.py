"""Progress bars: drawn on stderr on a terminal, never into pipes or logs, and off on request."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

SCRIPT = "from mddpm.progress import track\nfor _ in track(range(3), 'counting', enabled={enabled}): pass\n"


def run_on_terminal(code: str) -> str:
    """What ``python -c code`` writes when its stdout and stderr are a (pseudo-)terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the follower side closed: the process has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode(errors="replace")


def test_bar_is_drawn_on_a_terminal():
    shown = run_on_terminal(SCRIPT.format(enabled=True))
    assert "counting" in shown and "3/3" in shown


def test_no_bar_on_a_terminal_when_turned_off():
    assert run_on_terminal(SCRIPT.format(enabled=False)) == ""


def test_no_bar_in_a_pipe():
    piped = subprocess.run([sys.executable, "-c", SCRIPT.format(enabled=True)], capture_output=True, text=True,
                           check=True)
    assert piped.stdout == "" and piped.stderr == ""

