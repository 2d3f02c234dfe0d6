"""The check pipeline: from a credential to a verdict (see :mod:`.pipeline`)."""
