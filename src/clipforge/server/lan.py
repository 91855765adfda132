"""The addresses other machines reach a server at that listens on every interface (`serve --host 0.0.0.0`).

The start-up line names http://127.0.0.1:PORT, which opens on this machine only: a teacher serving a class over the
school's network had no address to give the students. Found locally, without a packet sent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

__all__ = ["lan_addresses", "lan_line"]


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other machines may reach it at (no loopback, link-local or unspecified),
    found without a packet sent: the source address of the default route (a UDP socket's `connect` only looks
    up the route) first, then the addresses of the host's name. Empty when neither answers (no network)."""
    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 9))  # UDP connect: a route lookup, nothing sent
        found.append(probe.getsockname()[0])
    with contextlib.suppress(OSError, UnicodeError):
        found += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    usable = [a for a in found if not (ip := ipaddress.ip_address(a)).is_loopback and not ip.is_link_local
              and not ip.is_unspecified]
    return list(dict.fromkeys(usable))


def lan_line(host: str, port: int) -> str | None:
    """The start-up line after the first for a server listening on every interface (`--host 0.0.0.0`): the
    addresses other machines open (the first line's 127.0.0.1 works on this machine only), else None."""
    if host not in ("0.0.0.0", "", "::", "[::]"):
        return None
    urls = [f"http://{address}:{port}/" for address in lan_addresses()]
    if not urls:
        return f"other machines: open this machine's network address with port {port} (none was found here)"
    return f"other machines on this network (phones, classmates) open {' or '.join(urls)}"
