"""Benchmarks (`python -m app bench`): the speed bench and its timers, --scale, --transfer and
--budget. Uses the library as a user would; nothing in the library imports it."""
