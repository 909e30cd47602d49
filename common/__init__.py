"""The lowest floor of openpose-train: the exception base every project error derives from
(``errors.py``) and the one way to write a file (``files.py``). Every folder may import this; it
imports no other project folder and needs only the standard library
(docs/architecture.md §Import rules)."""
