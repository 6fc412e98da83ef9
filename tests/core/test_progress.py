"""The one progress display: off a terminal it draws nothing, each step's bar counts and is gone
when the step ends, and the status column reads as a person does (done/total, MB, time left)."""

import io

from rich.console import Console

from app.core.progress import bar, clock, make_progress


def test_off_a_terminal_no_bar_is_added_and_a_step_bar_is_removed_when_done():
    off = make_progress(Console(file=io.StringIO()), enabled=False)
    assert off.disable
    on = make_progress(Console(file=io.StringIO(), force_terminal=True), enabled=True)
    with on, bar(on, "checking images", 3) as advance:
        advance()
        advance(2)
        assert on.tasks[0].completed == 3
    assert on.tasks == []
    with bar(None, "nothing", 3) as advance:
        advance()  # no Progress: a no-op


def test_times_read_as_a_clock():
    assert [clock(s) for s in (None, float("nan"), -1, 5, 65, 3723)] == ["?", "?", "?", "0:05", "1:05", "1:02:03"]
