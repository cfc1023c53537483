"""OPC UA security against a real secured asyncua server: our own certificate created on
first run, server-side trust of it, username/password, every policy and mode, a clear
DeviceRejected (no retry storm) for wrong credentials or an untrusted certificate, and
pinning / trust-on-first-use of the server's certificate."""

from __future__ import annotations

import asyncio
import logging
import stat

import pytest
import pytest_asyncio
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from opcua_fixtures import (
    NS_PRESS,
    UaTestServer,
    Users,
    Var,
    device,
    make_cert,
    wait_until,
)

from drivers.opcua import security
from drivers.opcua.driver import OpcUaDriver
from edge_agent.config import Tag
from edge_agent.errors import DeviceRejected
from edge_agent.model import DeviceStatus, Quality
from edge_agent.sampling import run_device

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALL_SECURE = [
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt, ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt, ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt, ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
]
TAGS = [Tag(name="parts", device="ua", address=f"nsu={NS_PRESS};s=Counter", type="UInt32")]
SECURE = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
          "username": "operator", "password": "s3cret"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory):
    certs = tmp_path_factory.mktemp("server-pki")
    srv = UaTestServer(variables=[Var("Counter", "UInt32", 42)], policies=ALL_SECURE,
                       certificate=make_cert(certs, "server", "urn:freeopcua:python:server", server=True),
                       users=Users({"operator": "s3cret"}), trusted_clients=set())
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tmp_path_factory.mktemp("agent-pki")


async def no_sessions(srv: UaTestServer) -> None:
    """The server drops a refused session when our socket closes (asynchronously, on its side)."""
    await wait_until(lambda: srv.sessions() == 0, 2, "the server to hold no session of ours")


def trust_agent(srv: UaTestServer, pki) -> None:
    der = (pki / security.OWN_CERT).read_bytes()
    srv.trusted_clients.add(x509.load_der_x509_certificate(der).public_bytes(Encoding.DER))


async def test_first_run_creates_a_certificate_the_untrusting_server_rejects_clearly(secured, pki, caplog):
    caplog.set_level(logging.INFO)
    drv = OpcUaDriver(device(secured.url, **SECURE), TAGS, pki_dir=pki)
    with pytest.raises(DeviceRejected) as exc:
        await drv.connect()
    message = str(exc.value)
    cert = pki / security.OWN_CERT
    assert "BadCertificateUntrusted" in message and str(cert) in message and "trust" in message
    assert "Traceback" not in message and "\n" not in message
    assert cert.is_file() and stat.S_IMODE((pki / security.OWN_KEY).stat().st_mode) == 0o600
    assert any("opcua_certificate_created" in r.getMessage() and str(cert) in r.getMessage() for r in caplog.records)
    await no_sessions(secured)
    # a second run reuses the same certificate (the technician trusted that one)
    before = cert.read_bytes()
    with pytest.raises(DeviceRejected):
        await OpcUaDriver(device(secured.url, **SECURE), TAGS, pki_dir=pki).connect()
    assert cert.read_bytes() == before


async def test_trusted_certificate_with_right_credentials_connects(secured, pki):
    trust_agent(secured, pki)
    drv = OpcUaDriver(device(secured.url, **SECURE), TAGS, pki_dir=pki)
    await drv.connect()
    try:
        (sample,) = await drv.read()
        assert (sample.value, sample.quality) == (42, Quality.GOOD)
        assert secured.sessions() == 1
    finally:
        await drv.close()
    await no_sessions(secured)


@pytest.mark.parametrize("policy", ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"])
@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_every_policy_and_mode(secured, pki, policy, mode):
    trust_agent(secured, pki)
    drv = OpcUaDriver(device(secured.url, **{**SECURE, "security_policy": policy, "security_mode": mode}), TAGS,
                      pki_dir=pki)
    await drv.connect()
    try:
        assert drv._client.security_policy.URI.endswith(policy)
        assert drv._client.security_policy.Mode == security.MODES[mode]
        assert (await drv.read())[0].value == 42
    finally:
        await drv.close()


async def test_wrong_password_is_rejected_once_without_retry_storm(secured, pki):
    trust_agent(secured, pki)
    drv = OpcUaDriver(device(secured.url, **{**SECURE, "password": "wrong"}), TAGS, pki_dir=pki)
    attempts = secured.users.attempts
    with pytest.raises(DeviceRejected) as exc:
        await drv.connect()
    assert str(exc.value) == (f"ua: server {secured.url} refused user 'operator' (BadUserAccessDenied): "
                              "check the credentials")
    assert "wrong" not in str(exc.value)
    # the sampler backs off to its maximum on DeviceRejected: one attempt, one status, no storm
    emitted = []

    async def emit(items):
        emitted.extend(items)

    task = asyncio.create_task(run_device(drv, emit))
    await asyncio.sleep(2.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert secured.users.attempts - attempts == 2  # the direct connect above + the sampler's single attempt
    statuses = [e for e in emitted if isinstance(e, DeviceStatus)]
    assert len(statuses) == 1 and not statuses[0].connected and "BadUserAccessDenied" in statuses[0].error
    await no_sessions(secured)


async def test_server_offering_no_matching_endpoint_is_rejected(secured, pki):
    drv = OpcUaDriver(device(secured.url), TAGS, pki_dir=pki)  # security None: the server only offers secure ones
    with pytest.raises(DeviceRejected):
        await drv.connect()
    secure_none = OpcUaDriver(device(secured.url, **{**SECURE, "security_policy": "Basic256Sha256",
                                                     "security_mode": "Sign"}), TAGS, pki_dir=pki)
    await secure_none.connect()  # sanity: the same server accepts a matching endpoint
    await secure_none.close()


async def test_server_certificate_trusted_on_first_use_then_required(secured, pki, tmp_path):
    trust_agent(secured, pki)
    known = pki / "trusted" / "ua.der"
    assert known.is_file(), "the server certificate was kept on first use"
    assert known.read_bytes() == x509.load_der_x509_certificate(known.read_bytes()).public_bytes(Encoding.DER)
    impostor_cert, _ = make_cert(tmp_path, "impostor", "urn:impostor")
    original = known.read_bytes()
    known.write_bytes(impostor_cert.read_bytes())
    try:
        with pytest.raises(DeviceRejected, match="certificate changed"):
            await OpcUaDriver(device(secured.url, **SECURE), TAGS, pki_dir=pki).connect()
    finally:
        known.write_bytes(original)
    pinned = device(secured.url, **SECURE, server_certificate=str(impostor_cert))
    with pytest.raises(DeviceRejected, match="not the pinned one"):
        await OpcUaDriver(pinned, TAGS, pki_dir=pki).connect()
    await no_sessions(secured)



async def test_x509_user_certificate_authentication(secured, pki, tmp_path):
    trust_agent(secured, pki)
    user_cert, user_key = make_cert(tmp_path, "operator", "urn:operator")
    other_cert, other_key = make_cert(tmp_path, "stranger", "urn:stranger")
    secured.users.certificates.add(user_cert.read_bytes())
    x509_auth = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"}
    drv = OpcUaDriver(device(secured.url, **x509_auth, user_certificate=str(user_cert),
                             user_private_key=str(user_key)), TAGS, pki_dir=pki)
    await drv.connect()
    try:
        assert (await drv.read())[0].value == 42
    finally:
        await drv.close()
    stranger = OpcUaDriver(device(secured.url, **x509_auth, user_certificate=str(other_cert),
                                  user_private_key=str(other_key)), TAGS, pki_dir=pki)
    with pytest.raises(DeviceRejected, match=r"refused user certificate .*stranger.der \(BadUserAccessDenied\)"):
        await stranger.connect()
    await no_sessions(secured)


async def test_unreadable_user_certificate_is_a_rejection_not_a_crash(tmp_path):
    drv = OpcUaDriver(device("opc.tcp://127.0.0.1:1", user_certificate=str(tmp_path / "missing.der"),
                             user_private_key=str(tmp_path / "missing.pem")), TAGS, pki_dir=tmp_path)
    with pytest.raises(DeviceRejected, match="cannot load a certificate or key"):
        await drv.connect()


async def test_devices_sharing_a_pki_dir_share_one_certificate(tmp_path):
    devices = [device("opc.tcp://127.0.0.1:1", name=f"ua{i}", security_policy="Basic256Sha256") for i in range(4)]
    identities = await asyncio.gather(*(security.own_identity(d, tmp_path) for d in devices))
    assert len({i.certificate for i in identities}) == 1
    cert = x509.load_der_x509_certificate((tmp_path / security.OWN_CERT).read_bytes())
    key = (tmp_path / security.OWN_KEY).read_bytes()
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    assert load_pem_private_key(key, None).public_key().public_numbers() == cert.public_key().public_numbers()
