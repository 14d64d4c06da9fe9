"""Alembic's environment and the schema's history, one linear line of revisions (`versions/`), run by
`genq.store.migrate`. The revisions write the schema out as it was at each step; the environment imports
only the persistence layer (`genq.store`).
"""
