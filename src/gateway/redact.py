"""Secrets never leave the gateway: API keys, passwords in URLs and DSNs, bearer tokens.

Every text the gateway emits that could carry one (a client's error body, a log line, /health,
/metrics, the start-up banner) goes through one :class:`Redactor`. It knows the secrets the
settings hold (backend keys, the embedding server's key, passwords in any configured URL or
DSN) and also removes what merely looks like one, because a backend or an embedding server may
echo a key the gateway never saw ("rejected key Bearer sk-...").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "[redacted]"
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^/\s@:]*(?::[^/\s@]*)?)@")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)()([A-Za-z0-9._~+/=-]+)")
_ASSIGNED = re.compile(r"(?i)\b(token|api[_-]?key|password|passwd|pwd|secret)(['\"]?\s*[=:]\s*)(['\"]?)([^\s'\",;&}]+)")
_KEY_LIKE = re.compile(r"\b(sk|pk|rk|hf|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{8,}\b")


def url_password(url: str | None) -> str | None:
    """The password in ``url`` (``scheme://user:password@host``), or None."""
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``[redacted]@``: for banners and logs."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", url)


class Redactor:
    """Removes known secrets and anything shaped like one from a text."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    @classmethod
    def for_settings(cls, settings) -> Redactor:
        """Every secret ``settings`` can reach: backend (and judge) keys and URL passwords, the embedding
        server's key and URL password, the store's DSN password, the gateway's own API key."""
        found: list[str | None] = []
        judge = settings.judge_backend() if hasattr(settings, "judge_backend") else None
        for b in [*settings.backends, *([judge] if judge else [])]:
            found += [b.api_key(), url_password(b.base_url)]
        for env in (settings.embedding_key_env, settings.api_key_env):
            found.append(os.environ.get(env) if env else None)
        found += [url_password(settings.embedding_url), url_password(settings.store)]
        return cls(found)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
        for pattern in (_BEARER, _ASSIGNED):
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}", text)
        return _KEY_LIKE.sub(MASK, text)
