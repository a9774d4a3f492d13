"""Devices: what a user's session list shows about each session (``SessionInfo.device``).

The web adapters record, when a session is created and when it logs in, the request's
``User-Agent`` (kept as sent, up to :data:`MAX_USER_AGENT` bytes) and its client address
(truncated by default: see :func:`client_ip`); the user may name the device
(``session.device_name = "work laptop"``). Neither the user agent nor the address is ever
logged.

The short label ("Firefox on Linux") is derived when read, so a better parser improves old
entries too: with the ``devices`` extra (``pip install 'stickless[devices]'``, the
`ua-parser <https://pypi.org/project/ua-parser/>`_ package and its bundled rules) it names
what that parser knows; without it, :func:`heuristic_label` recognises the common browsers
and systems by the tokens they send.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from stickless.config import DeviceIP

AGENT_PARTS = 4
PART_BYTES = 64
"""A user agent is stored in up to :data:`AGENT_PARTS` hash fields of at most this many
bytes: a session hash stays in Redis's compact encoding (listpack) only while every value
is at most 64 bytes, and a typical user agent (100-200 bytes) in one field would triple the
memory of a small session (measured on Valkey 9: 192 -> 579 bytes)."""
MAX_USER_AGENT = AGENT_PARTS * PART_BYTES
"""Longer user agents are cut to this many bytes (UTF-8) before they are stored."""
MAX_DEVICE_NAME = PART_BYTES
"""The longest ``session.device_name``, in bytes of UTF-8 (64 ASCII characters)."""


@dataclass(frozen=True, slots=True)
class Device:
    """What is known about the device of one session. Safe to show to the session's user;
    render it escaped (every field is text the client chose)."""

    user_agent: str | None
    """The ``User-Agent`` the browser sent when the session was created or logged in
    (raw, up to :data:`MAX_USER_AGENT` bytes), or None."""
    ip: str | None
    """The client address as configured by ``SessionConfig.device_ip``: a network such as
    ``"203.0.113.0/24"`` (default, truncated), the full address, or None."""
    name: str | None
    """The name the user gave it (``session.device_name``), or None."""
    created_at: datetime
    """When the session was created (server clock, UTC)."""
    last_seen: datetime
    """When it was last used (the last load that refreshed it, or save; UTC)."""

    @property
    def label(self) -> str:
        """A short description of the user agent: ``"Firefox on Linux"``, ``"Safari on
        iOS"``, ``"curl"``; ``"Unknown device"`` when there is nothing to go by."""
        return user_agent_label(self.user_agent)

    @property
    def display_name(self) -> str:
        """The user's name for it, else :attr:`label`."""
        return self.name or self.label


# ----------------------------------------------------------------- client addresses
def client_ip(address: object, mode: DeviceIP = "truncated") -> str | None:
    """The client address as stored for a device: ``"truncated"`` (default) keeps its
    network only, ``/24`` for IPv4 (``"203.0.113.0/24"``) and ``/48`` for IPv6
    (``"2001:db8:1::/48"``; an IPv4-mapped IPv6 address counts as IPv4); ``"full"`` the
    address itself; ``"none"`` nothing. Anything that is not an IP address (a Unix socket
    peer, a test client's placeholder) gives None."""
    if mode == "none" or not isinstance(address, str) or not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if mode == "full":
        return str(ip)
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def clean_user_agent(value: object) -> str | None:
    """A ``User-Agent`` header as stored: stripped, without control characters, cut to
    what :func:`user_agent_parts` can hold; None when empty."""
    if not isinstance(value, str):
        return None
    text = "".join(c for c in value.strip()[:MAX_USER_AGENT] if c.isprintable())
    return "".join(user_agent_parts(text)) or None


def user_agent_parts(user_agent: str) -> tuple[str, ...]:
    """``user_agent`` in :data:`AGENT_PARTS` pieces of at most :data:`PART_BYTES` bytes of
    UTF-8 each (never splitting a character; ``""`` for the unused ones, which clears what a
    longer one left); what does not fit is dropped."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for char in user_agent:
        width = len(char.encode("utf-8", "surrogatepass"))
        if size + width > PART_BYTES:
            parts.append("".join(current))
            if len(parts) == AGENT_PARTS:
                break
            current, size = [], 0
        current.append(char)
        size += width
    else:
        parts.append("".join(current))
    parts += [""] * (AGENT_PARTS - len(parts))
    return tuple(parts[:AGENT_PARTS])


def check_device_name(value: object) -> str | None:
    """``session.device_name`` checked: a printable ``str`` of at most
    :data:`MAX_DEVICE_NAME` characters (stripped; empty means no name), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"device_name must be a str or None, not {type(value).__name__}")
    name = value.strip()
    if not name.isprintable():
        raise ValueError("device_name must be printable text (no control characters)")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        raise ValueError("device_name must be valid Unicode (no lone surrogates)") from None
    if len(encoded) > MAX_DEVICE_NAME:
        raise ValueError(f"device_name is longer than {MAX_DEVICE_NAME} bytes (UTF-8)")
    return name or None


# --------------------------------------------------------------------- user agents
_BROWSERS = (  # the first token found names the browser: the specific ones before Chrome
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("OPR/", "Opera"),
    ("Opera/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Vivaldi/", "Vivaldi"),
    ("YaBrowser/", "Yandex Browser"),
    ("DuckDuckGo/", "DuckDuckGo"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("MSIE ", "Internet Explorer"),
    ("Trident/", "Internet Explorer"),
)
_SYSTEMS = (  # iOS and Android before macOS and Linux: their user agents name those too
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("iPod", "iOS"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Macintosh", "macOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
    ("FreeBSD", "FreeBSD"),
)


def heuristic_label(user_agent: str | None) -> str:
    """The label without a parser: the first of these tokens names the browser (Edge,
    Opera, Samsung Internet, Vivaldi, Yandex, DuckDuckGo, Firefox, Chrome, Chromium, Safari,
    Internet Explorer) and of these the system (iOS, iPadOS, Android, ChromeOS, Windows,
    macOS, Linux, FreeBSD): ``"<browser> on <system>"``, or either alone. Anything else
    (an HTTP library, a bot) is named by its first product token (``"curl"``)."""
    if not user_agent:
        return "Unknown device"
    browser = next((name for token, name in _BROWSERS if token in user_agent), None)
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or system or ""
    product = user_agent.split("/", 1)[0].split(" ", 1)[0].strip()
    return product[:40] if product and product != "Mozilla" else "Unknown device"


@lru_cache(maxsize=1)
def _parser() -> Callable[[str], str | None] | None:
    """The ``ua-parser`` package's labeller, when it is installed (the ``devices`` extra)."""
    try:
        from ua_parser import parse_os, parse_user_agent  # noqa: PLC0415  (the devices extra)
    except ImportError:
        return None

    def label(user_agent: str) -> str | None:
        agent, system = parse_user_agent(user_agent), parse_os(user_agent)
        names = [
            part.family
            for part in (agent, system)
            if part is not None and part.family and part.family != "Other"
        ]
        return " on ".join(names) or None

    return label


@lru_cache(maxsize=1024)
def user_agent_label(user_agent: str | None) -> str:
    """A short label for a user agent (see :attr:`Device.label`): ``ua-parser``'s when it
    is installed and knows the agent, else :func:`heuristic_label`'s."""
    if not user_agent:
        return "Unknown device"
    parse = _parser()
    found = parse(user_agent) if parse is not None else None
    return found or heuristic_label(user_agent)
