"""Connections for brokered calls: to addresses checked at connect time, TLS by host name.

The host name is resolved once per connection, every address is checked, and
the socket is opened to a checked address, so a DNS answer that changes between
a check and the connect (rebinding) cannot move the call onto the user's
network. TLS still sends and verifies the host name, as in any HTTPS call.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable

import anyio
import httpcore
import httpx

from piper_mcp.broker.errors import BrokerRefusal

Resolver = Callable[[str, int], Awaitable[list[str]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def default_ssl_context() -> ssl.SSLContext:
    """Certificate checks as every httpx client here makes them: SSL_CERT_FILE or
    SSL_CERT_DIR when set, else certifi's CA bundle."""
    return httpx.create_ssl_context()


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the system resolver's order."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def is_public(address: Address) -> bool:
    """Whether `address` is on the public internet: not private, loopback, link-local,
    multicast, reserved, unspecified, shared (CGNAT), nor 6to4 around one of those.

    IPv4-mapped, NAT64 and Teredo addresses are in ranges `ipaddress` already counts as
    reserved or private; 6to4 is global, so the IPv4 address inside it is checked.
    """
    inner = address.sixtofour if isinstance(address, ipaddress.IPv6Address) else None
    if inner is not None and not is_public(inner):
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved


class CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens each TCP connection to an address it has just resolved and checked.

    `allow_private`: the operator's rule lets the call reach private addresses.
    `resolve`: host, port -> addresses; the system resolver by default.
    `inner`: the backend that opens sockets; httpcore's own by default.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolve = resolve or system_resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.addresses(host, port)
        for address in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(
                    address.compressed, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue  # the next address may answer
        return await self._inner.connect_tcp(
            addresses[-1].compressed, port, timeout, local_address, socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def addresses(self, host: str, port: int) -> list[Address]:
        """Where `host` may be reached; `BrokerRefusal` if it cannot be, or must not be."""
        try:
            found: list[Address] = [ipaddress.ip_address(host)]  # an IP literal the rule lists
        except ValueError:
            try:
                found = [ipaddress.ip_address(each) for each in await self._resolve(host, port)]
            except (OSError, ValueError):
                found = []
        if not found:
            raise BrokerRefusal(
                f"{host} could not be resolved to an address, so the call was not made; "
                "check the host name in the URL and the network connection.",
                reason="dns_failed",
            )
        if not self._allow_private:
            for address in found:
                if not is_public(address):
                    raise BrokerRefusal(
                        f"{host} is at {address.compressed}, which is not a public internet "
                        "address, so the call was not made. If this API really is "
                        'on a private network, the operator can set "allow_private": true '
                        "in its rule.",
                        reason="private_address",
                    )
        return found
