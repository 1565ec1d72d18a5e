"""The web console under ``/console``: the pages (static HTML, CSS and JavaScript shipped in
``static/``, no build step, nothing loaded from outside), the login that turns a username and
password (or an API token) into an HttpOnly session cookie with its CSRF token
(:mod:`.session`), and the security headers every page leaves with (:mod:`.headers`). The
pages call the same JSON API as any system, with the same access rules.
"""
