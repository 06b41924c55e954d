"""``python -m benchmarks``: the same as ``python benchmarks/run_all.py``."""

from benchmarks.run_all import main

if __name__ == "__main__":
    main()
