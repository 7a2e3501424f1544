"""``merlin token SUB``: a development bearer token, signed with the configured shared secret."""

from __future__ import annotations

import argparse
import re

from domain.errors import MerlinError
from kernel.auth import ALL_ROOMS, READ, SCOPES, WRITE, AuthSettings, mint
from merlin.local.kept_secrets import KeptFiles

_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def signing_secret(settings: AuthSettings) -> str:
    """``MERLIN_AUTH_JWT_SECRET``, or the one `merlin dev` keeps; an error if there is neither."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    kept = KeptFiles.configured().auth_secret
    if kept.exists():
        return kept.read_text().strip()
    raise MerlinError(
        "no secret to sign with: set MERLIN_AUTH_JWT_SECRET (or run `merlin dev`, which keeps one in"
        f" {kept}); with MERLIN_AUTH_JWKS_URL, tokens come from your identity provider"
    )


def seconds(ttl: str) -> int:
    match = _TTL.match(ttl.strip())
    if match is None or int(match.group(1)) <= 0:
        raise MerlinError(f"--ttl {ttl!r}: a positive number with s, m, h or d, e.g. 1h")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _token(options: argparse.Namespace) -> int:
    settings = AuthSettings()
    scopes = options.scope.split()
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise MerlinError(f"--scope: unknown {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    rooms = [room.strip() for room in options.rooms.split(",") if room.strip()]
    secret, ttl = signing_secret(settings), seconds(options.ttl)
    token = mint(
        secret, options.subject, scopes=scopes, rooms=rooms, ttl_seconds=ttl,
        audience=settings.audience, issuer=settings.issuer,
    )  # fmt: skip
    print(token)
    return 0


def add_token_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token",
        help="print a development bearer token (HS256, MERLIN_AUTH_JWT_SECRET)",
        description="Print a JWT for SUBJECT, signed with MERLIN_AUTH_JWT_SECRET (or the secret `merlin dev`"
        " keeps), with the configured audience and issuer.",
    )
    token.add_argument("subject", metavar="SUB", help="who the caller is: the sender of its messages")
    token.add_argument("--rooms", default=ALL_ROOMS, help="comma-separated room ids, or * for all (default)")
    token.add_argument(
        "--scope", default=f"{WRITE} {READ}", help=f'space-separated (default "{WRITE} {READ}")'
    )
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 90s, 30m, 1h, 7d (default 1h)")
    token.set_defaults(handler=_token)
