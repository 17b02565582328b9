import sys

from harness.cli import main

if __name__ == "__main__":  # guard: generator processes are spawned and re-import this module
    sys.exit(main())
