"""Who is calling: API tokens for systems (:mod:`.tokens`), clinicians and operators with
their passwords and login sessions (:mod:`.users`), OIDC bearer tokens from the hospital's
identity provider (:mod:`.oidc`), and the :class:`~.principal.Principal` every route gets.
May import: store, mapping, errors, config.
"""
