"""The ``impactbus`` command.

``base`` (finding the hub, running a command body on a bus, exit codes, one-line errors)
and ``words`` (validation errors in the words of the command's flags) are what the command
modules share; one module per command group: ``hub`` (up, run, demo), ``recipients``,
``subscriptions``, ``post`` (post, tail), ``outbox``, ``digest``, ``admin`` (tokens, schema
export), ``ops`` (dead letters, delivery log, webhook secrets, status). ``app`` assembles
them into the typer app; nothing imports ``app`` (the ``cli-acyclic`` import contract).
"""
