import sys

from tui_profiler.cli import main

sys.exit(main())
