"""Saved conversations: the SQLite store (`store`), its schema versions (`migrations`), search
(`search`), reply metadata (`stats`) and imported files (`imports`).

`app.conversations` re-exports the public names, so callers import from there.
"""
