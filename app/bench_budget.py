"""`python -m app bench --budget` (issue 16): not yet written."""


def run_budget(data, minutes, log=print, device="auto"):
    raise NotImplementedError
