"""Sources by name: ``electricitymaps``, ``watttime``, ``ukgrid`` or ``csv:PATH`` as written in
a config or on the command line, built into a :class:`~greencpn.sources.base.CarbonSource`
(:func:`open_source`). The chain around one (:func:`greencpn.sources.chain.open_chain`) is
built from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from greencpn.clock import Clock
from greencpn.errors import ConfigError
from greencpn.sources.files import FileSource

LIVE_SOURCES = ("electricitymaps", "watttime", "ukgrid")
SOURCE_SPECS = (*LIVE_SOURCES, "csv:PATH")


def open_source(
    spec: str,
    *,
    clock: Clock,
    zone: str | None = None,
    base_url: str | None = None,
    keys_file: str | Path | None = None,
    accounting: str = "lifecycle",
    policy: Any = None,
    check_keys: bool = True,
) -> Any:
    """Build a source from its name as written in a config or on the command line.

    Args:
        spec: ``electricitymaps``, ``watttime``, ``ukgrid`` or ``csv:PATH``.
        clock: the clock every part uses.
        zone: the zone (needed for ``csv:PATH`` multi-zone files).
        base_url: API root override.
        keys_file: TOML key file (else ``$GREENCPN_KEYS_FILE`` / the default path).
        accounting: lifecycle or direct (Electricity Maps, files).
        policy: a :class:`~greencpn.sources.http.RetryPolicy`.
        check_keys: raise :class:`~greencpn.errors.ConfigError` now if a key is missing.

    Raises:
        ConfigError: unknown source name, csv without a path, missing key / unsafe key file.
    """
    from greencpn.sources.http import HttpClient
    from greencpn.sources.keys import KeyStore

    name, _, arg = spec.partition(":")
    if name == "csv":
        if not arg:
            raise ConfigError(
                "csv source needs a path", field="source", fix="write csv:PATH, e.g. csv:carbon.csv"
            )
        return FileSource(arg, zone=zone or "", accounting=accounting)
    if name not in LIVE_SOURCES:
        raise ConfigError(
            f"unknown source {spec!r}", field="source", fix=f"use one of {', '.join(SOURCE_SPECS)}"
        )
    kw: dict[str, Any] = {"http": HttpClient(name, policy, clock=clock), "clock": clock}
    if base_url:
        kw["base_url"] = base_url
    if name == "ukgrid":
        from greencpn.sources.ukgrid import UKGridSource

        return UKGridSource(**kw)
    keys = KeyStore.from_env(key_file=keys_file)
    if name == "electricitymaps":
        from greencpn.sources.electricitymaps import ElectricityMapsSource

        if check_keys:
            keys.require("electricitymaps", "token")
        return ElectricityMapsSource(keys=keys, accounting=accounting, **kw)  # type: ignore[arg-type]
    from greencpn.sources.watttime import WattTimeSource

    if check_keys:
        keys.require("watttime", "username")
        keys.require("watttime", "password")
    return WattTimeSource(keys=keys, **kw)
