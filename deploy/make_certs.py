#!/usr/bin/env python3
"""Make the TLS certificates a fedsynth SuperLink needs: a private CA and a server certificate.

Run by the coordinator, once per federation (and again to re-issue the server
certificate, which reuses the CA already in the folder)::

    python deploy/make_certs.py --out certs --host superlink.example.org --host 203.0.113.7

writes into ``certs/``:

- ``ca.crt``     the CA certificate: send it to every partner site (public);
- ``ca.key``     the CA private key: keep it offline, never on the SuperLink host;
- ``server.pem`` the SuperLink's certificate, valid for every ``--host`` given
  (DNS names and IP addresses go into the Subject Alternative Name);
- ``server.key`` the SuperLink's private key (stays on the SuperLink host).

The SuperLink takes them as ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem
--ssl-keyfile server.key``; a SuperNode and the ``flwr`` CLI verify the
SuperLink with ``ca.crt``. Only the Python ``cryptography`` package is needed
(installed with Flower).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.pem", "server.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """PEM private key, readable by its owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    """IP addresses as IPAddress entries, everything else as DNSName entries."""
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip() for h in hosts if h.strip()):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def _key_usage(ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; the server signs TLS handshakes (ECDSA) and does ECDH."""
    flags = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "encipher_only", "decipher_only"), False
    )
    return x509.KeyUsage(digital_signature=True, key_agreement=not ca, key_cert_sign=ca, crl_sign=ca, **flags)


def make_ca(name: str, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return cert, key


def make_server_cert(
    hosts: list[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(min(_now() + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return cert, key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for ca.crt, ca.key, server.pem, server.key")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="a DNS name or IP address SuperNodes and the flwr CLI use to reach the SuperLink (repeatable); "
        f"{', '.join(DEFAULT_HOSTS)} are always added",
    )
    parser.add_argument("--days", type=int, default=365, help="validity of the certificates (default 365)")
    parser.add_argument("--ca-name", default="fedsynth federation CA", help="common name of the CA")
    parser.add_argument(
        "--new-ca", action="store_true", help="replace a CA already in --out (sites need the new ca.crt)"
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    hosts = list(dict.fromkeys([*args.host, *DEFAULT_HOSTS]))
    if (out / CA_CERT).exists() and (out / CA_KEY).exists() and not args.new_ca:
        ca_cert = x509.load_pem_x509_certificate((out / CA_CERT).read_bytes())
        ca_key = serialization.load_pem_private_key((out / CA_KEY).read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            sys.exit(f"{out / CA_KEY}: not an EC key made by this script; use --new-ca")
        print(f"reusing the CA in {out / CA_CERT}")
    else:
        ca_cert, ca_key = make_ca(args.ca_name, args.days)
        _write_cert(out / CA_CERT, ca_cert)
        _write_key(out / CA_KEY, ca_key)
        print(f"new CA: {out / CA_CERT} (send to every site), {out / CA_KEY} (keep offline)")
    server_cert, server_key = make_server_cert(hosts, ca_cert, ca_key, args.days)
    _write_cert(out / SERVER_CERT, server_cert)
    _write_key(out / SERVER_KEY, server_key)
    print(f"SuperLink certificate: {out / SERVER_CERT}, key {out / SERVER_KEY}; valid for {', '.join(hosts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
