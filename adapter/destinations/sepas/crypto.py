"""The SEPAS secure envelope, as the public DITAS client builds it (research/sepas-ditas.md 1.3).

* ``Data``: base64 of AES-CBC (PKCS7) over the UTF-8 XML of the message.
* the AES key is 32 random hex characters used as their UTF-8 bytes (so AES-256), the IV
  16 random hex characters (16 bytes); both are fresh for every envelope.
* ``Key`` and ``IV``: base64 of RSA-OAEP (SHA-1, the .NET ``Encrypt(data, true)``
  padding) of those texts under the Ministry's public key.

The public key comes from config as PEM or as the .NET ``<RSAKeyValue>`` XML the Ministry
hands out. ``decrypt_envelope`` is the simulator's half; the adapter never has the
private key.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from adapter.limits import KEY_FILE_MAX_BYTES, read_bounded_bytes


class EnvelopeError(ValueError):
    """An envelope that cannot be opened (wrong key, damaged base64, bad padding)."""


_OAEP = OAEP(mgf=MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 - the wire's choice


@dataclass(frozen=True)
class Envelope:
    data: str
    key: str
    iv: str

    def as_fields(self) -> dict[str, str]:
        return {"Data": self.data, "Key": self.key, "IV": self.iv}


def _b64int(text: str) -> int:
    return int.from_bytes(base64.b64decode(text.strip()), "big")


def load_public_key(source: str | Path | bytes) -> rsa.RSAPublicKey:
    """A public key from PEM text/bytes, a PEM file, or .NET ``<RSAKeyValue>`` XML (text or file)."""
    raw = source if isinstance(source, bytes) else None
    if raw is None:
        text = str(source)
        raw = read_bounded_bytes(Path(text), KEY_FILE_MAX_BYTES, "public key file") if not text.lstrip().startswith(("-----", "<")) else text.encode()
    stripped = raw.strip()
    if stripped.startswith(b"<"):
        root = ElementTree.fromstring(stripped)
        modulus, exponent = root.findtext("Modulus"), root.findtext("Exponent")
        if not modulus or not exponent:
            raise EnvelopeError("RSAKeyValue XML without Modulus/Exponent")
        return rsa.RSAPublicNumbers(_b64int(exponent), _b64int(modulus)).public_key()
    key = serialization.load_pem_public_key(stripped)
    if not isinstance(key, rsa.RSAPublicKey):
        raise EnvelopeError("the Ministry key must be an RSA public key")
    return key


def encrypt_envelope(plaintext: bytes, public_key: rsa.RSAPublicKey) -> Envelope:
    key_text, iv_text = secrets.token_hex(16), secrets.token_hex(8)  # 32 and 16 hex characters
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key_text.encode()), modes.CBC(iv_text.encode())).encryptor()
    data = encryptor.update(padded) + encryptor.finalize()
    return Envelope(
        data=base64.b64encode(data).decode(),
        key=base64.b64encode(public_key.encrypt(key_text.encode(), _OAEP)).decode(),
        iv=base64.b64encode(public_key.encrypt(iv_text.encode(), _OAEP)).decode(),
    )


def decrypt_envelope(fields: dict[str, str], private_key: rsa.RSAPrivateKey) -> bytes:
    """The simulator's side: open ``{Data, Key, IV}`` with the private key."""
    try:
        key = private_key.decrypt(base64.b64decode(fields["Key"]), _OAEP)
        iv = private_key.decrypt(base64.b64decode(fields["IV"]), _OAEP)
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(base64.b64decode(fields["Data"])) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except (KeyError, TypeError, ValueError) as exc:
        raise EnvelopeError(f"cannot open the envelope: {type(exc).__name__}") from None


def generate_keypair(bits: int = 2048) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A fresh key pair for tests and the sandbox: (private key, public key PEM)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public_pem


def private_key_pem(private: rsa.RSAPrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise EnvelopeError("not an RSA private key")
    return key
