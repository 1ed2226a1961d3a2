"""
Keep secrets out of output: every URL this service prints or logs goes through :func:`mask_url`.

A configured URL may carry credentials (``https://user:password@host/``, ``mysql://root:pw@db/...``); they
are shown as ``***@``. :func:`mask_urls` does the same for every URL inside a longer text (an exception
message from a library, say).
"""

import re
from urllib.parse import urlsplit, urlunsplit

_CREDENTIALS_IN_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def mask_url(url):
    """``url`` with any ``user[:password]@`` replaced by ``***@``; other text is returned unchanged."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return mask_urls(text)
    if "@" not in parts.netloc:
        return mask_urls(text)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def mask_urls(text):
    """``text`` with the credentials of every ``scheme://user:password@`` in it replaced by ``***@``."""
    return _CREDENTIALS_IN_URL.sub(r"\g<scheme>***@", str(text))
