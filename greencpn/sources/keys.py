"""API keys: from the environment or a private key file, never logged.

Lookup order for each secret:

1. the environment variable (``GREENCPN_ELECTRICITYMAPS_TOKEN``, ``GREENCPN_WATTTIME_USERNAME``,
   ``GREENCPN_WATTTIME_PASSWORD``);
2. a TOML key file — ``$GREENCPN_KEYS_FILE`` or ``~/.config/greencpn/keys.toml`` — such as::

       [electricitymaps]
       token = "..."

       [watttime]
       username = "..."
       password = "..."

The key file must be readable by its owner only (mode 0600 or stricter); any other mode is
refused with the ``chmod`` command that fixes it. Secrets are wrapped in :class:`Secret`, whose
``str``/``repr`` never show the value, so a stray log line or traceback cannot leak it.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from greencpn.errors import ConfigError

ENV_KEYS_FILE = "GREENCPN_KEYS_FILE"
DEFAULT_KEYS_FILE = Path("~/.config/greencpn/keys.toml")

#: (provider, field) -> environment variable
ENV_VARS: dict[tuple[str, str], str] = {
    ("electricitymaps", "token"): "GREENCPN_ELECTRICITYMAPS_TOKEN",
    ("watttime", "username"): "GREENCPN_WATTTIME_USERNAME",
    ("watttime", "password"): "GREENCPN_WATTTIME_PASSWORD",
}


class Secret:
    """A string that does not print itself. Use :meth:`reveal` only where it is sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class KeyStore:
    """Where secrets come from: an environment mapping and an optional key file."""

    env: Mapping[str, str]
    key_file: Path | None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, key_file: str | Path | None = None
    ) -> KeyStore:
        """Build from ``os.environ`` (or ``env``); key file from the argument, the
        ``GREENCPN_KEYS_FILE`` variable or the default path (used only if it exists)."""
        env = dict(os.environ if env is None else env)
        if key_file is None:
            key_file = env.get(ENV_KEYS_FILE) or None
        path = Path(key_file).expanduser() if key_file else None
        if path is None:
            default = DEFAULT_KEYS_FILE.expanduser()
            path = default if default.exists() else None
        elif not path.exists():
            raise ConfigError(
                "key file not found",
                source=str(path),
                fix=f"create it (mode 0600) or unset {ENV_KEYS_FILE}",
            )
        return cls(env=env, key_file=path)

    def get(self, provider: str, field: str) -> Secret | None:
        """The secret for ``provider.field``, or None when it is configured nowhere."""
        var = ENV_VARS.get((provider, field))
        if var and self.env.get(var):
            return Secret(self.env[var])
        if self.key_file is None:
            return None
        data = read_key_file(self.key_file)
        section = data.get(provider)
        if isinstance(section, dict) and section.get(field):
            return Secret(str(section[field]))
        return None

    def require(self, provider: str, field: str) -> Secret:
        """Like :meth:`get` but raise a :class:`ConfigError` that says how to provide it."""
        value = self.get(provider, field)
        if value is None:
            var = ENV_VARS.get((provider, field), "?")
            where = str(self.key_file) if self.key_file else str(DEFAULT_KEYS_FILE)
            raise ConfigError(
                f"no {provider} {field} configured",
                source="keys",
                field=f"{provider}.{field}",
                fix=f'export {var}=... or put [{provider}] {field} = "..." in {where} (chmod 600)',
            )
        return value


def check_private(path: Path) -> None:
    """Refuse a key file that group or others can read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"key file permissions are {mode:04o}; other users could read the API keys",
            source=str(path),
            fix=f"chmod 600 {path}",
        )


def read_key_file(path: Path) -> dict[str, object]:
    """Parse the TOML key file after checking it is private."""
    check_private(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # The message names a position, never a value.
        raise ConfigError(
            f"not valid TOML ({exc})",
            source=str(path),
            fix="fix the TOML syntax (see docs/sources.md, 'Keys')",
        ) from None
