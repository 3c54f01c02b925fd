"""``python -m jobqueue_store`` runs the command line."""

from jobqueue_store.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
