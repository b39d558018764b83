"""Running the hub.

The services of one process and the embedded default (``hub``),
logging, and the demo.

Imports every package below it; only the CLI imports it.
"""
