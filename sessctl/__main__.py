"""`python -m sessctl`: the same program as the `sessctl` console script."""

from sessctl.cli import main

if __name__ == "__main__":
    main()
