"""The hub's services, one package per stage of the flow (lower never imports higher).

* ``bus`` — the only package that imports nats: connection, embedded server, topology,
  consumer loops, acks, KV and stream reads, failure policy, AsyncAPI export.
* ``config`` — the hub's settings, read once at the process edge.
* ``directory`` — recipients, subscriptions, matching, tokens, access rules, links.
* ``pipeline`` — ingest, router, delivery worker, threads, dead letters, delivery log.
* ``digest`` — digest service, schedules, views and their rendering.
* ``api``, ``web`` — the faces: HTTP API and web pages.
* ``runtime`` — the hub runner, logging, the demo.
* ``cli`` — the ``impactbus`` command.
"""
