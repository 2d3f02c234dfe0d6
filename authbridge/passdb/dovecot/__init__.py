"""A site's ``dovecot.conf`` read for its passdbs (``serve --dovecot-config``).

``syntax`` parses Dovecot's configuration language (our own parser), ``doveconf`` asks
the installed ``doveconf`` instead when there is one, ``dbfile`` reads the args files of
sql and ldap passdbs, and ``translate`` turns the result into authbridge's own
configuration, refusing what it cannot serve with file, line and reason.
"""
