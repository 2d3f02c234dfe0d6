"""Emit the MTA side of an authbridge setup: Exim and Postfix configuration.

The renderers are pure functions from :class:`~authbridge.mta.settings.MtaSettings` to
text, so they can be tested without touching the file system; writing files (idempotent,
``--force``, ``--diff``) lives in :mod:`authbridge.mta.files`.
"""
