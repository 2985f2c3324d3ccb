"""How an `AsyncEngine` (client.py) reaches its engine core: on a thread of this process
(`thread.py`) or in a child process over a pipe (`process.py`), behind one interface (`base.py`)."""
