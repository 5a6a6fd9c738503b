"""Hosts as rules name them: lower-case, IDNA, no trailing dot, a port only when not 443.

Rules and requests go through the same parser (httpx's URL parser), so a host
written two ways in two places compares equal, and a look-alike does not.
"""

from __future__ import annotations

import ipaddress
import re

import httpx

HTTPS_PORT = 443
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NOT_IN_A_HOST = ("/", "\\", "@", "?", "#", " ")


def normal_host(host: str) -> str:
    """`host` (from a parsed URL) in its one comparable form; ValueError if not a host name."""
    name = host.lower().removesuffix(".")
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        pass
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{host!r} is not a host name")
    return name


def host_key(host: str, port: int) -> str:
    """How a rule lists `host` at `port`: "name", "name:8443", "[::1]:8443"."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == HTTPS_PORT else f"{shown}:{port}"


def port_of(url: httpx.URL) -> int:
    return HTTPS_PORT if url.port is None else url.port


def parse_host(text: str) -> tuple[str, int]:
    """(host, port) of a rule's "name", "name:port", "[v6]:port" or bare IPv6; else ValueError."""
    if not text or any(char in text for char in _NOT_IN_A_HOST):
        raise ValueError(f"{text!r} is not a host")
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    try:
        url = httpx.URL(f"https://{text}/")
    except httpx.InvalidURL:
        raise ValueError(f"{text!r} is not a host") from None
    port = port_of(url)
    if not 0 < port < 65536:
        raise ValueError(f"{text!r} has no valid port")
    return normal_host(url.raw_host.decode("ascii")), port
