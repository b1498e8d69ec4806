"""Loopback ports the suite's servers listen on. The defaults are fixed ranges; sessions that share
a machine set REVERIE_TEST_PORT_BASE (e.g. 18800) to move every test server into their own
hundred: a default port keeps its last two digits."""

import os


def port(default: int) -> int:
    base = os.environ.get("REVERIE_TEST_PORT_BASE", "")
    return int(base) + default % 100 if base else default
