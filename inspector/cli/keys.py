"""Key subcommands: ``keys generate [--curve]`` and ``gallery sign`` (a detached Ed25519 signature)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.core.names import EXIT_OK

if TYPE_CHECKING:
    from argparse import _SubParsersAction as SubParsers


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Write a new key pair; print the public files and the fingerprint or public key, never the secret."""
    if args.curve:
        from inspector.bus.curve import generate_curve_keypair

        secret, public, key = generate_curve_keypair(args.name)
        print(f"CURVE key pair: secret {secret} (mode 0600, keep it on its host), public {public}")
        print(f"public key {key}")
        return EXIT_OK
    from inspector.model.signing import generate_keypair

    secret, public, fingerprint = generate_keypair(args.name)
    print(f"Ed25519 signing key pair: secret {secret} (mode 0600, keep it off the line), public {public}")
    print(f"fingerprint {fingerprint} (list {public} in [security] gallery_signers)")
    return EXIT_OK


def cmd_gallery_sign(args: argparse.Namespace) -> int:
    """Validate a gallery fully, then write its detached signature ``<gallery>.sig``."""
    from inspector.model.gallery import load_gallery
    from inspector.model.signing import sign_gallery

    gallery = load_gallery(args.gallery)
    path, signer = sign_gallery(args.gallery, gallery.sha256, args.key)
    print(f"gallery {args.gallery}: hash {gallery.sha256[:12]} signed by {signer} -> {path}")
    return EXIT_OK


def add_sign_command(gallery: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``gallery sign`` under the ``gallery`` subcommands."""
    s = gallery.add_parser("sign", help="add a detached Ed25519 signature <gallery>.sig")
    s.add_argument("--key", type=Path, required=True, help="secret key file (inspector keys generate NAME)")
    s.add_argument("gallery", type=Path, help="gallery file (validated before signing)")
    s.set_defaults(func=cmd_gallery_sign)


def add_key_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``keys generate``."""
    keys = sub.add_parser("keys", help="make signing and CURVE key pairs").add_subparsers(
        dest="keys_command", required=True, metavar="{generate}"
    )
    g = keys.add_parser(
        "generate",
        help="new key pair: NAME.ed25519 + NAME.ed25519.pub, or with --curve NAME.key_secret + NAME.key",
    )
    g.add_argument("name", type=Path, help="file name prefix of the pair (existing files are never replaced)")
    g.add_argument("--curve", action="store_true", help="a ZeroMQ CURVE pair for the sockets instead")
    g.set_defaults(func=cmd_keys_generate)
