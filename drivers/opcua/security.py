"""OPC UA security: our application instance certificate, trust of the server's, error classification.

Layout of the PKI directory (default: `pki/` beside the buffer file, or the device's `pki_dir`):

    pki/own/edge-agent.der        our certificate (created on first run; trust it on the server)
    pki/own/edge-agent.key.pem    its private key (mode 0600)
    pki/trusted/<device>.der      the server certificate trusted on first use

File and crypto work runs in a thread (`asyncio.to_thread`): key generation takes ~100 ms.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.crypto import cert_gen, security_policies
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_agent.config import OpcUaDevice
from edge_agent.errors import DeviceRejected

log = logging.getLogger("drivers.opcua")

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {"None": ua.MessageSecurityMode.None_, "Sign": ua.MessageSecurityMode.Sign,
         "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
OWN_CERT, OWN_KEY = "own/edge-agent.der", "own/edge-agent.key.pem"
CERT_DAYS = 3650  # an expiring certificate on a line PC stops production; renew by deleting the files

# Status codes that mean "the server refused us": retrying will not help until someone acts.
_REJECT_PREFIXES = ("BadCertificate", "BadIdentityToken", "BadUser", "BadSecurity", "BadNoValidCertificates",
                    "BadApplicationSignatureInvalid", "BadLicense")
_CREDENTIAL_CODES = ("BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected",
                     "BadUserSignatureInvalid")


_LOCKS: dict[Path, asyncio.Lock] = {}


@dataclass(frozen=True, slots=True)
class Identity:
    certificate: Path
    private_key: Path
    application_uri: str


def default_application_uri() -> str:
    return f"urn:{socket.gethostname()}:edge-agent"


def status_name(e: BaseException) -> str | None:
    """The OPC UA status name carried by an asyncua exception, if any."""
    code = getattr(e, "code", None)
    if isinstance(code, int):
        return ua.StatusCode(code).name
    return None


def is_rejection(e: BaseException) -> bool:
    name = status_name(e)
    return name is not None and name.startswith(_REJECT_PREFIXES)


def rejection(device: OpcUaDevice, e: BaseException, identity: Identity | None) -> DeviceRejected:
    """A clear, single-line DeviceRejected for a refusal, telling the technician what to do."""
    name = status_name(e) or type(e).__name__
    if name in _CREDENTIAL_CODES:
        who = f"user {device.username!r}" if device.username else (
            f"user certificate {device.user_certificate}" if device.user_certificate else "anonymous login")
        return DeviceRejected(device.name, f"server {device.url} refused {who} ({name}): check the credentials")
    where = f"; trust {identity.certificate} on the server (move it from the server's rejected to its trusted certificates)" \
        if identity else ""
    return DeviceRejected(device.name, f"server {device.url} refused the agent's certificate or security settings "
                                       f"({name}){where}")


def resolve_pki_dir(device: OpcUaDevice, default: Path | None) -> Path:
    if device.pki_dir is not None:
        return device.pki_dir
    if default is not None:
        return default
    return Path(os.environ.get("STATE_DIRECTORY", ".")) / "pki"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16]


# ---------------------------------------------------------------- our certificate


def _uri_of(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _load_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 from the first byte on."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _ensure_own(pki: Path, app_uri: str) -> tuple[Identity, bool]:
    cert_path, key_path = pki / OWN_CERT, pki / OWN_KEY
    if cert_path.is_file() and key_path.is_file():
        cert = _load_cert(cert_path)
        still_valid = cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        if still_valid and _uri_of(cert) == app_uri:
            return Identity(cert_path, key_path, app_uri), False
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_path.parent, 0o700)
    key = cert_gen.generate_private_key()
    host = socket.gethostname()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, "edge-agent", {}, [x509.UniformResourceIdentifier(app_uri), x509.DNSName(host)],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH], days=CERT_DAYS,
    )
    _write_private(key_path, cert_gen.dump_private_key_as_pem(key))
    _write_public(cert_path, cert.public_bytes(Encoding.DER))
    return Identity(cert_path, key_path, app_uri), True


async def own_identity(device: OpcUaDevice, pki: Path) -> Identity:
    """Our application instance certificate: the configured one, or ours from the PKI dir (created if missing)."""
    if device.certificate is not None:
        try:
            cert = await asyncio.to_thread(_load_cert, device.certificate)
        except (OSError, ValueError) as e:
            raise DeviceRejected(device.name, f"cannot read certificate {device.certificate}: {e}") from None
        uri = device.application_uri or _uri_of(cert) or default_application_uri()
        return Identity(device.certificate, device.private_key, uri)  # type: ignore[arg-type]
    uri = device.application_uri or default_application_uri()
    lock = _LOCKS.setdefault(pki.resolve(), asyncio.Lock())  # several devices share one certificate
    try:
        async with lock:
            identity, created = await asyncio.to_thread(_ensure_own, pki, uri)
    except (OSError, ValueError) as e:
        raise DeviceRejected(device.name, f"cannot create the agent certificate in {pki}: {e}") from None
    if created:
        log.warning("event=opcua_certificate_created device=%s certificate=%s application_uri=%s "
                    "hint=\"trust this certificate on the OPC UA server\"", device.name, identity.certificate, uri)
    else:
        log.info("event=opcua_certificate device=%s certificate=%s", device.name, identity.certificate)
    return identity


# ---------------------------------------------------------------- the server's certificate


def _trusted_path(device: OpcUaDevice, pki: Path) -> Path:
    return pki / "trusted" / f"{device.name}.der"


def _check_server(device: OpcUaDevice, pki: Path, der: bytes) -> str | None:
    """None if the server certificate is trusted (pinned, or first use); else why not."""
    if device.server_certificate is not None:
        pinned = _load_cert(device.server_certificate).public_bytes(Encoding.DER)
        if pinned != der:
            return (f"the server's certificate (sha256 {fingerprint(der)}) is not the pinned one "
                    f"{device.server_certificate} (sha256 {fingerprint(pinned)})")
        return None
    path = _trusted_path(device, pki)
    if path.is_file():
        known = path.read_bytes()
        if known != der:
            return (f"the server's certificate changed (sha256 {fingerprint(known)} -> {fingerprint(der)}); "
                    f"if that is expected, delete {path} to trust the new one")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_public(path, der)
    log.warning("event=opcua_server_trusted device=%s certificate=%s sha256=%s hint=\"trusted on first use\"",
                device.name, path, fingerprint(der))
    return None


async def check_server_certificate(device: OpcUaDevice, pki: Path, der: bytes) -> None:
    try:
        problem = await asyncio.to_thread(_check_server, device, pki, der)
    except (OSError, ValueError) as e:
        raise DeviceRejected(device.name, f"cannot check the server certificate: {e}") from None
    if problem:
        raise DeviceRejected(device.name, problem)
