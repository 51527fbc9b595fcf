"""Entry point of one client process of a multi-process load (see `client._run_in_processes`).

A module of its own so that the classes it pickles back are `tui_profiler.load.client.*`, not `__main__.*`."""

from tui_profiler.load.client import _child_main

if __name__ == "__main__":
    _child_main()
