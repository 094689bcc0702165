"""``python -m sgma_cli``: the same entry point as the ``sgma`` console script."""

from sgma_cli.cli.app import main

if __name__ == "__main__":
    main()
