"""Every way a brokered call is refused, each with a short code for the audit trail."""

from __future__ import annotations

from typing import Literal

Reason = Literal[
    # The request, checked before anything is sent or the user is asked.
    "method",  # not one of the methods call_api sends
    "bad_url",  # not a URL, or too long
    "scheme",  # not https
    "userinfo",  # user:password@ in the URL
    "host_not_allowed",  # host or port not named by the rule
    "injected_parameter",  # the model set the query parameter the credential goes in
    "injected_header",  # the model set the header the credential goes in
    "forbidden_header",  # Host, Content-Length, Connection, Proxy-*, ...
    "bad_header",  # not a header name, control characters, too many or too long
    "request_too_large",  # body over MAX_REQUEST_BODY
    # The credential itself.
    "bad_credential",  # cannot be written into the request (empty, control characters)
    # Sending it.
    "dns_failed",  # the host name did not resolve
    "private_address",  # it resolved to a private, loopback, link-local, ... address
    "connect_failed",  # no TCP connection
    "tls",  # the TLS handshake failed (certificate not trusted, wrong name, ...)
    "timeout",  # the whole call took longer than the rule's timeout
    "broken_response",  # the connection broke off or the answer was not HTTP
]


class BrokerRefusal(Exception):
    """A call not made, or not finished; the text says what and what to do, never the credential.

    `reason` is a short code for the audit trail.
    """

    def __init__(self, text: str, *, reason: Reason) -> None:
        super().__init__(text)
        self.reason: Reason = reason
