"""Secret references inside configuration strings, resolved at run time.

Two forms: ``${env:NAME}`` (an environment variable) and ``${vault:mount/path#key}`` (key ``key``
of the KV v2 secret at ``path`` under mount ``mount``, e.g.
``${vault:secret/partnerships/hubspot#token}``). ``$${`` stands for a literal ``${``.
A reference that cannot be resolved raises :class:`SecretError` naming the reference, never a
value, with a hint that says what would fix it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ResourceNotFound,
    VendorError,
)
from partnerships_orchestrator.connectors.vault import VaultClient
from partnerships_orchestrator.errors import ConfigurationError, SecretError

_TOKEN = re.compile(r"\$\$\{|\$\{(?P<scheme>env|vault):(?P<target>[^}]*)\}")
_VAULT_HINT = "check the Vault path and policy"


@dataclass(frozen=True)
class SecretReference:
    """One ``${scheme:target}`` reference."""

    scheme: Literal["env", "vault"]
    target: str

    def __str__(self) -> str:
        return f"${{{self.scheme}:{self.target}}}"

    def vault_location(self) -> tuple[str, str, str]:
        """``(mount, path, key)`` of a vault reference."""
        location, _, key = self.target.partition("#")
        mount, _, path = location.strip("/").partition("/")
        if not (mount and path and key):
            raise SecretError(
                f"malformed secret reference {self}",
                "write ${vault:<mount>/<path>#<key>}, e.g. ${vault:secret/partnerships/hubspot#token}",
            )
        return mount, path, key


def find_references(text: str) -> list[SecretReference]:
    """Every secret reference in ``text``, in order."""
    return [
        SecretReference(m["scheme"], m["target"])  # type: ignore[arg-type]
        for m in _TOKEN.finditer(text)
        if m["scheme"]
    ]


def has_references(text: str) -> bool:
    """True if ``text`` contains at least one secret reference."""
    return bool(find_references(text))


VaultSource = VaultClient | Callable[[], VaultClient | None] | None


class SecretResolver:
    """Resolves references from the environment and Vault; Vault reads are cached for a TTL.

    ``vault`` is a client, a factory called on first use (so a missing Vault only matters to
    playbooks that reference it), or None.
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        vault: VaultSource = None,
        cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._vault_source = vault
        self._vault: VaultClient | None = vault if isinstance(vault, VaultClient) else None
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, Mapping[str, Any]]] = {}

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, cache_ttl: float = 300.0
    ) -> SecretResolver:
        """Environment variables plus a Vault client configured from ``VAULT_*`` when set."""
        env = os.environ if environ is None else environ
        return cls(environ=env, vault=lambda: VaultClient.from_env(env), cache_ttl=cache_ttl)

    def resolve(self, text: str) -> str:
        """``text`` with every reference replaced by its value."""
        return _TOKEN.sub(self._substitute, text)

    def resolve_all(self, value: Any) -> Any:
        """``value`` with references resolved in every string of nested dicts and lists."""
        if isinstance(value, str):
            return self.resolve(value)
        if isinstance(value, Mapping):
            return {k: self.resolve_all(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.resolve_all(v) for v in value]
        return value

    def resolve_reference(self, reference: SecretReference) -> str:
        """The value of one reference."""
        if reference.scheme == "env":
            return self._from_env(reference)
        return self._from_vault(reference)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Close the Vault client this resolver built from its factory."""
        if self._vault is not None and self._vault is not self._vault_source:
            self._vault.close()

    def _substitute(self, match: re.Match[str]) -> str:
        if not match["scheme"]:
            return "${"
        return self.resolve_reference(SecretReference(match["scheme"], match["target"]))  # type: ignore[arg-type]

    def _from_env(self, reference: SecretReference) -> str:
        name = reference.target
        value = self._environ.get(name)
        if value is None:
            raise SecretError(
                f"secret reference {reference} cannot be resolved",
                f"set the environment variable {name}",
            )
        if value == "":
            raise SecretError(
                f"secret reference {reference} resolves to an empty value",
                f"set the environment variable {name} to the secret",
            )
        return value

    def _from_vault(self, reference: SecretReference) -> str:
        mount, path, key = reference.vault_location()
        data = self._read(reference, mount, path)
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise SecretError(
                f"secret reference {reference}: the Vault secret has no key {key!r}",
                f"keys present: {keys}",
            )
        value = data[key]
        return value if isinstance(value, str) else json.dumps(value)

    def _read(self, reference: SecretReference, mount: str, path: str) -> Mapping[str, Any]:
        """The secret's data, from the cache while fresh."""
        with self._lock:
            cached = self._cache.get((mount, path))
            if cached is not None and self._clock() < cached[0]:
                return cached[1]
            vault = self._client(reference)
            try:
                secret = vault.read_kv(mount, path)
            except ResourceNotFound:
                raise SecretError(
                    f"secret reference {reference}: nothing stored at Vault path {mount}/{path}",
                    _VAULT_HINT,
                ) from None
            except AuthenticationError as exc:
                raise SecretError(
                    f"secret reference {reference}: Vault refused access ({exc.message})",
                    f"{_VAULT_HINT}, and the Vault credentials",
                ) from exc
            except VendorError as exc:
                raise SecretError(
                    f"secret reference {reference}: Vault is unavailable ({exc.message})",
                    "check VAULT_ADDR and that Vault is unsealed, then retry",
                ) from exc
            ttl = secret.lease_duration or self._cache_ttl
            self._cache[(mount, path)] = (self._clock() + ttl, secret.data)
            return secret.data

    def _client(self, reference: SecretReference) -> VaultClient:
        if self._vault is None and callable(self._vault_source):
            try:
                self._vault = self._vault_source()
            except ConfigurationError as exc:
                raise SecretError(
                    f"secret reference {reference}: {exc.message}", exc.hint
                ) from None
        if self._vault is None:
            raise SecretError(
                f"secret reference {reference} needs Vault, which is not configured",
                "set VAULT_ADDR and VAULT_TOKEN (or VAULT_ROLE_ID and VAULT_SECRET_ID)",
            )
        return self._vault
