#!/usr/bin/env python3
"""Make a partner site's SuperNode authentication key pair.

Run by the partner site, on its own machine (the private key never leaves it)::

    python deploy/make_site_keys.py --out keys --name site-eu

writes ``keys/site-eu`` (private key, mode 0600) and ``keys/site-eu.pub``
(public key). Flower 1.42 expects an elliptic-curve key on a NIST curve in
OpenSSH format: the SuperNode reads the private key with
``--auth-supernode-private-key keys/site-eu``; the site sends ``site-eu.pub``
to the coordinator, who registers it with
``flwr supernode register keys/site-eu.pub CONNECTION``. The same pair can be
made with ``ssh-keygen -t ecdsa -b 384 -N "" -f keys/site-eu``.

The printed SHA256 fingerprint lets site and coordinator check, by a second
channel (phone, signed e-mail), that the registered key is the site's.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}


def fingerprint(public_openssh: bytes) -> str:
    """``SHA256:...`` as ``ssh-keygen -lf KEY.pub`` prints it."""
    blob = base64.b64decode(public_openssh.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def make_key_pair(curve: str = "p384", comment: str = "") -> tuple[bytes, bytes]:
    """(private key, public key), both in OpenSSH format."""
    key = ec.generate_private_key(CURVES[curve]())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if comment:
        public += b" " + comment.encode()
    return private, public + b"\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for NAME and NAME.pub")
    parser.add_argument("--name", required=True, help="file name (letters, digits, '.', '_', '-'), e.g. the site")
    parser.add_argument("--curve", choices=sorted(CURVES), default="p384", help="NIST curve (default p384)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing key pair")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.name):
        parser.error("--name may hold letters, digits, '.', '_' and '-' only")

    args.out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = args.out / args.name, args.out / f"{args.name}.pub"
    if (private_path.exists() or public_path.exists()) and not args.overwrite:
        sys.exit(f"{private_path}: exists; pass --overwrite to replace it (then register the new .pub)")
    private, public = make_key_pair(args.curve, comment=args.name)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(public)
    print(f"private key: {private_path} (keep it on this machine)")
    print(f"public key:  {public_path} (send it to the coordinator)")
    print(f"fingerprint: {fingerprint(public)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
