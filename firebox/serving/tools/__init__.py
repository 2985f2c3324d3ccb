"""Tool calling: the request's tools resolved once (`calling.py`), the model family's call format
(`formats.py`: prompt, grammar and parser of the calls), and the prompt (`prompting.py`)."""
