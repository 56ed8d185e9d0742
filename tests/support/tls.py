"""A self-signed certificate and key for 127.0.0.1, for TLS tests (no openssl at run time).

Test-only and loopback-only. Generated once with ``openssl req -x509 -newkey rsa:2048
-nodes -days 36500 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost``
(valid until 2126).
"""

from __future__ import annotations

import ssl
from pathlib import Path

CERT = """\
-----BEGIN CERTIFICATE-----
MIIDJzCCAg+gAwIBAgIUXw0+DaH7d3lru9IbhYqi6QBIFkAwDQYJKoZIhvcNAQEL
BQAwFDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTEyNjIyNDQzNVoYDzIxMjYx
MTAyMjI0NDM1WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwggEiMA0GCSqGSIb3DQEB
AQUAA4IBDwAwggEKAoIBAQC1pWeg5Civm0hJrH08r9AiVqxlgkwcuq5LVd47wtlH
yOf+v1zljqzc9VJ5zxsIrnDlKJftm/OJ88E9DUvBSiXleviZeu071oQBOUAewJ8L
UEvHrBX1RgVKphmlvii7U22uuIht6Uqgwuh4BGK0ZB6BeaRUdl+4GwOqp+2Qoz79
czdOJaLrC95MrShMBbrU8xVcN1pkW/IUWpfAugXrjb94WdRDQ43itqwykmDJHqqC
eBo5dhXrPhwFbnue0fkJXMoQm1ZctRAhddy6ISFIi9kUOKZTCKvIXNnH/eu9ItKn
H7SUVq7S3cZabwnt/kv9t3iSzUCVkmGI1nIoSkyFoHutAgMBAAGjbzBtMB0GA1Ud
DgQWBBRVyKTrjW7I1hn4O+Yau1UmhvBVFDAfBgNVHSMEGDAWgBRVyKTrjW7I1hn4
O+Yau1UmhvBVFDAPBgNVHRMBAf8EBTADAQH/MBoGA1UdEQQTMBGHBH8AAAGCCWxv
Y2FsaG9zdDANBgkqhkiG9w0BAQsFAAOCAQEAJCfp8u2GhSXcJ48Sbrrf2vHt97BQ
oBMqrSEIuN3vPObx/wdKOez67PJa98lxvHCyE5wcC74hNlTwNhaY7g+pGXyqQ0bG
zjNR3O5IxHVB2WsBi2CrDMLH67H3hs3+dTvHl7NDRWzOV+i1iExgPxLfzOLW1rEr
NHTPO43TAiQtiCnbBMdOwBORoMO2++JZ7+Y0Ip0zOebf+QHZbaXtKEoOVMWyrPtr
K+iBUB+uPKvksvTlfW54Wh52GGhZe86JEO9vpOtTNX05VBOnTgKtiYrq6SLHGkXS
TSOyV5oP49x39mswVWbgvXu2F9a+vQJU6XmnXLexYJlzX3eCrX2TeemLMw==
-----END CERTIFICATE-----
"""
KEY_PEM = """\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC1pWeg5Civm0hJ
rH08r9AiVqxlgkwcuq5LVd47wtlHyOf+v1zljqzc9VJ5zxsIrnDlKJftm/OJ88E9
DUvBSiXleviZeu071oQBOUAewJ8LUEvHrBX1RgVKphmlvii7U22uuIht6Uqgwuh4
BGK0ZB6BeaRUdl+4GwOqp+2Qoz79czdOJaLrC95MrShMBbrU8xVcN1pkW/IUWpfA
ugXrjb94WdRDQ43itqwykmDJHqqCeBo5dhXrPhwFbnue0fkJXMoQm1ZctRAhddy6
ISFIi9kUOKZTCKvIXNnH/eu9ItKnH7SUVq7S3cZabwnt/kv9t3iSzUCVkmGI1nIo
SkyFoHutAgMBAAECggEAHgj6EB/53EOUWd5EHQdDJpJnUieP10ZE8J8DrqUC0XxW
ZAiXXzvOuIB2AT8uDKrvbuzd5kOdqudbwfETYCQXDRFezt4FIRpQ3HTvdcZK5g+C
YENDpDlOQbAiWIYPbR4X6kaIBIiJNvjTgJjVC1fstWL8OZ0TKbmJyyuWPA7KKRUf
NSeThcS/Hk4fF9g+Ccx0RUDCfTqi7bn60pq1O+HiHbCn+sn631RFu8a1+MBm99LF
azVsUpieYCcAcu4AIUgXi+Bs14CVj2BmNTk7UhNt/QftS9L9i58RW6QC8eYbYhIG
XYOVARS2x2A0ryCe4kcuPDIMV2YZsUCi0DVPgaGrvwKBgQDYA/j5rGZ+Hdm+Yhfa
cgT4vl0K3rfGERu6D30AlfrfbbLZ+iZXLf1NHzBrgpboBeAYljY6HOpSvAisAjwA
W5LTB9wvVVE73r4xfm+qPZfq670C8COz/01nUvVxKDlBLXdPoJhAcnix8HYhDeo6
k4iqjytadMTdnG44e15SZHtKjwKBgQDXRNEjWStTYKebDV5vZ4NpuFKV9/pTDen1
7a3mREpEauzFN0Rp50ORy4Up4wGGEzzM/g0vR8pwE5vrRt4qHfAfH+YUVREk5s9N
dJGwm1wQEjUpF2jN0KENoyxxs4QPya+Q0hrP1Tu6v1lsbcFcUQ6tDM24Z8g1qTya
LsFv7mWkAwKBgQCvb/qDfBr5jnDLiItq5HNZOfIC5ANJH5fvMqkJEsXfNA6vrdP5
teYk/pGqnzLEWhE4prZ/2AAPFZvNZzsn5zeFoLqYzqfdAfhh5hf2oXOCXdbyTeoR
Q+WvZtbkAhEN+EkQKJO+s7mGeo7WJaD31d6G9yP0oSVJ/sQdp0Rhki33zQKBgGSk
l+Ke3dKtba7gITaUfqv+sR3MQgxyhN+lr5fodZBnLStHG4Unyj9vl2Jt71hvxg1Q
+XkRZ2PexxbImzW1qX3ju/3lh45pGqJrzXF0MSaSXKhJeYY/9AwcLbs64pM/CAX9
NOvWFYbJz1USO0Sd4O6m/ccpPkFYTi0Hjwh1vK9hAoGAfAJQb6hX80iSIffCbHJt
uBmJKV7cK4PONIfV1Rznf/gaQP+jwk644AkT5bBKvBEw86rUfGrkvybiJY/x10Rq
PL276MgKD24Y0AZQvmgT5foaoe33OBoeQ/3o3F4Tg6PXD8SoEeU8+mecFTrzzw3/
vj8D69h0yDMn7rTfpK95slU=
-----END PRIVATE KEY-----
"""


def self_signed(folder: Path) -> ssl.SSLContext:
    """A server TLS context with the self-signed certificate (written to ``folder``)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_text(CERT)
    key.write_text(KEY_PEM)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
