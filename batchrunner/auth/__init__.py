"""Auth: the bearer token on every request, where it comes from and how it stays fresh.

``tokens`` holds the token providers (a static key, no auth, or google-auth credentials
renewed in the background and once more after a 401); ``credentials`` finds and loads a key
file or Application Default Credentials; ``refresh`` says what a failed renewal means and how
long to wait before the next; ``secret`` wraps a token so that it never shows itself. The
modules here are private: their public names are exported by ``batchrunner``. They import only
the ground floor (``errors``, ``results``, ``config``).
"""
