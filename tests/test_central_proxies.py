"""The central service behind the union's own TLS proxy (docs/operations.md, "TLS"):
with ``UNIONCARD_PROXIES`` it takes the shop's address from ``X-Forwarded-For``, so
the enrolment's guess limit is per shop again. Without it, behind nginx, every request
came from nginx's address: ten wrong codes from anyone refused every shop's right one
for 15 minutes (429)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import create_app
from central.errors import CentralError
from central.keys import create_keys
from central.service import CentralPaths, Union
from pact.device import KeySigner, public_key_hex
from pact.enrolcode import normal_code, sign_request
from tests.conftest import Clock

URL = "http://127.0.0.1:9"
NGINX = {"REMOTE_ADDR": "127.0.0.1"}


def _app(tmp_path: Path, clock: Clock, proxies: str):  # type: ignore[no-untyped-def]
    paths = CentralPaths(tmp_path / "central")
    create_keys(paths.keys, now=clock())
    union = Union.open(paths, None, clock)
    union.add_merchant("M0001", "Shop", 500)
    code, _ = union.create_enrol_code("T1", "M0001")
    union.close()
    app = create_app({"DATA_DIR": str(paths.data_dir), "CLOCK": clock, "PROXIES": proxies})
    return app, code


def _enrol(client, code: str, shop: str):  # type: ignore[no-untyped-def]
    signer = KeySigner(Ed25519PrivateKey.generate())
    body = {
        "code": code,
        "device_key": public_key_hex(signer.public_key()),
        "signature": sign_request(signer, normal_code(code), URL),
        "central_url": URL,
    }
    headers = {"X-Forwarded-For": shop, "X-Forwarded-Proto": "https"}
    return client.post("/api/v1/enrol", json=body, headers=headers, environ_base=NGINX)


@pytest.mark.parametrize(("proxies", "shop_gets"), [("1", 200), ("0", 429)])
def test_wrong_codes_from_one_address_do_not_block_another_shop(
    tmp_path: Path, clock: Clock, proxies: str, shop_gets: int
) -> None:
    app, code = _app(tmp_path, clock, proxies)
    client = app.test_client()
    for i in range(10):
        wrong = _enrol(client, "AAAA-AAAA-AAAA-AAAA-AA" + "ABCDEFGHIJ"[i] + "A", "203.0.113.9")
        assert wrong.status_code in (401, 429)
    assert _enrol(client, "AAAA-AAAA-AAAA-AAAA-AAAA", "203.0.113.9").status_code == 429
    # the shop, from its own address (through the same nginx)
    assert _enrol(client, code, "198.51.100.7").status_code == shop_gets


@pytest.mark.parametrize("value", ["nginx", "-1", "9", ""])
def test_a_wrong_number_of_proxies_is_one_line(tmp_path: Path, clock: Clock, value: str) -> None:
    with pytest.raises(CentralError, match="UNIONCARD_PROXIES=.*0 to 4"):
        _app(tmp_path, clock, value)
