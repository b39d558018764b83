"""The delivery pipeline.

Ingest (events onto EVENTS), the router (events to delivery
jobs), the delivery worker (jobs to notifiers), threads, dead letters, the delivery log
and owner notices.

Imports ``services.directory``, ``services.bus`` and ``services.config``; never the digest,
the faces or the runtime.
"""
