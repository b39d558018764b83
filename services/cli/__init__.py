"""The ``impactbus`` command.

``app`` (the typer app and the everyday commands), ``admin``
(tokens, schema export), ``ops`` (dead letters, delivery log, status) and ``words``
(validation errors in the words of the command's flags).
"""
