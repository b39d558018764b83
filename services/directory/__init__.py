"""Who is told what.

Recipients and subscriptions (``records``), subscription matching,
API tokens and roles (``auth``), who may change whose recipient (``access``), signed
personal links (``links``), rate limits and the local sign-in token.

Imports ``services.bus`` and ``services.config`` below it, nothing above.
"""
