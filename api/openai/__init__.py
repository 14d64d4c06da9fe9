"""The OpenAI-compatible surface, mounted under /openai/v1 (`routes.bp`), so that the official `openai` client
works against genq unchanged: models, chat completions and completions (streamed or not), files and the Batch
API. Every request becomes a genq job through genq's one write path.

    routes        the blueprint: its nested blueprints and OpenAI's error shape (errors)
    models        GET /models
    completions   POST /chat/completions, /completions: submit, then wait (waiting) or stream (streaming)
    requests      OpenAI request bodies to genq jobs; objects: genq jobs to OpenAI response objects
    files         POST/GET/DELETE /files, GET /files/{id}/content (a batch's output and error files included)
    batches       POST/GET /batches, GET /batches/{id}, POST /batches/{id}/cancel, on genq's own batches
    batch_lines   OpenAI's batch request line as a genq job (genq's POST /v1/batches takes them too)
    caller        the caller's identity: the one function every ownership decision goes through

This package imports nothing at load, so api.batch_parsing can use batch_lines without a cycle.
"""
