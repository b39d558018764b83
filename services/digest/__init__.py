"""Digests.

The service that runs each recipient's digest on the server's schedule
(``service``), schedules and periods (``schedule``), the view of a period's items
(``view``) and its Slack rendering (``slack``).

Imports ``services.directory``, ``services.bus`` and ``services.config``; never the
pipeline, the faces or the runtime.
"""
