"""Certificates and keys for the local control plane (pure file generation).

One CA signs the API server's serving certificate and an admin client certificate
(group `system:masters`); a separate RSA key pair signs service-account tokens.
Everything is written once into the cluster directory and reused on later starts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = dt.timedelta(days=3650)  # a dev cluster; rotated by deleting the directory


@dataclass(frozen=True)
class Pki:
    """Paths of every PEM file the components need."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _sign(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server_names: list[str] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        sans: list[x509.GeneralName] = []
        for n in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def server_names(service_ip: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The API server certificate's names: loopback, the node link, the Service."""
    return [
        "127.0.0.1",
        "localhost",
        *extra,
        service_ip,
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]


def _cert_names(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + list(
        san.get_values_for_type(x509.DNSName)
    )


def _load_ca(pki: Pki) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.load_pem_x509_certificate(pki.ca_crt.read_bytes()).subject, key


def ensure_server_cert(pki: Pki, names: list[str]) -> None:
    """(Re)sign the API server's certificate when it lacks one of `names`."""
    if pki.server_crt.exists() and set(names) <= set(_cert_names(pki.server_crt)):
        return
    ca_name, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    crt = _sign(_name("kube-apiserver"), key, ca_name, ca_key, server_names=names)
    _write(pki.server_crt, crt.public_bytes(serialization.Encoding.PEM))
    _write(pki.server_key, _key_pem(key), private=True)


def ensure_client_cert(pki: Pki, stem: str, cn: str, org: str | None) -> tuple[Path, Path]:
    """A client certificate `<stem>.crt/.key` for user `cn` in group `org` (kept once made)."""
    crt, key_path = pki.dir / f"{stem}.crt", pki.dir / f"{stem}.key"
    if crt.exists() and key_path.exists():
        return crt, key_path
    ca_name, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(_name(cn, org), key, ca_name, ca_key, client=True)
    _write(crt, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _key_pem(key), private=True)
    return crt, key_path


def ensure_pki(directory: Path, service_ip: str, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Create the PKI in `directory` unless it is already complete; return its paths.

    The API server's certificate is re-signed when its names change (the node link and
    the Service range are chosen per start)."""
    pki = Pki(directory)
    files = [pki.ca_crt, pki.ca_key, pki.server_crt, pki.server_key, pki.admin_crt]
    if all(p.exists() for p in [*files, pki.admin_key, pki.sa_key, pki.sa_pub]):
        ensure_server_cert(pki, server_names(service_ip, extra_ips))
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("berth-dev-ca")
    ca_crt = _sign(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_crt = _sign(
        _name("kube-apiserver"),
        server_key,
        ca_name,
        ca_key,
        server_names=server_names(service_ip, extra_ips),
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_crt = _sign(
        _name("berth-admin", "system:masters"), admin_key, ca_name, ca_key, client=True
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    _write(pki.ca_crt, ca_crt.public_bytes(pem))
    _write(pki.ca_key, _key_pem(ca_key), private=True)
    _write(pki.server_crt, server_crt.public_bytes(pem))
    _write(pki.server_key, _key_pem(server_key), private=True)
    _write(pki.admin_crt, admin_crt.public_bytes(pem))
    _write(pki.admin_key, _key_pem(admin_key), private=True)
    _write(pki.sa_key, _key_pem(sa_key), private=True)
    _write(
        pki.sa_pub,
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    return pki
