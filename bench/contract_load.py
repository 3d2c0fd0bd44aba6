"""Generador de carga para el servidor del banco, escrito solo a partir del contrato.

Este módulo se escribió leyendo únicamente ``PROTOCOL.md`` (el contrato del
protocolo ATM1) y ``vectors.json`` (sus vectores de prueba), sin leer el código
del servidor ni el del cajero, y no importa nada del proyecto: ni ``common``,
ni ``bank_server``, ni ``atm_gui``, ni ``tests``, ni otros módulos de ``bench``.

¿Por qué? Las cifras de rendimiento del banco (transacciones por segundo,
latencias) tienen que salir de un cliente que no comparta el código del
servidor ni, por tanto, sus errores. Si el cliente de carga usara la misma
biblioteca de cifrado, de tramas o de mensajes que el servidor, un error común
(una clave mal derivada, un MAC calculado sobre los bytes equivocados, un
saldo mal redondeado) pasaría inadvertido en ambos lados y la medición
seguiría "funcionando". Aquí cada respuesta se comprueba por completo contra
el contrato (trama, MAC, relleno, número de secuencia implícito, JSON, campos
y códigos), y los saldos que devuelve el banco se contrastan con lo que el
propio cliente depositó.

Uso (desde la raíz del proyecto)::

    python -m bench.contract_load --host 127.0.0.1 --puerto 8123 --llave llave.key \\
        --tarjetas tarjetas.json --cajeros 4 [--calentamiento 1.5] [--ventana 5] \\
        [--monto 1.00] [--sesiones 0]

Escribe un único objeto JSON en la salida estándar; los diagnósticos van a
la salida de errores. También se puede llamar en el mismo proceso con
:func:`run`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import multiprocessing
import os
import queue
import re
import resource
import socket
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from Crypto.Cipher import AES

# --------------------------------------------------------------------------
# Constantes del contrato (PROTOCOL.md)
# --------------------------------------------------------------------------

MAGIC = b"ATM1"
MAX_FRAME = 65_536
NONCE_LEN = 32
PSK_LEN = 32
HKDF_INFO = b"ATM1 session keys"
PROOF_LABEL = b"ATM1 server proof"
CLIENT_HELLO_LEN = 4 + NONCE_LEN  # 36
SERVER_HELLO_LEN = 4 + NONCE_LEN + 32  # 68
BLOCK = 16
TAG_LEN = 32
MIN_RECORD = BLOCK + BLOCK + TAG_LEN  # IV + al menos un bloque + T = 64

ERROR_CODES = frozenset(
    {
        "PETICION_INVALIDA",
        "NO_IDENTIFICADO",
        "TARJETA_INVALIDA",
        "PIN_INCORRECTO",
        "TARJETA_BLOQUEADA",
        "MONTO_INVALIDO",
        "FONDOS_INSUFICIENTES",
        "LIMITE_DIARIO",
        "ID_REPETIDO",
        "PIN_INVALIDO",
        "ERROR_INTERNO",
    }
)

_REQUEST_AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_REPLY_AMOUNT = re.compile(r"[0-9]+\.[0-9]{2}")
_CARD = re.compile(r"[0-9]{12,19}")
_PIN = re.compile(r"[0-9]{4,6}")
_TX_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX_KEY = re.compile(r"[0-9A-Fa-f]{64}")

# Rellenos PKCS#7 precalculados: _PADS[n] son n bytes de valor n.
_PADS = tuple(bytes((n,)) * n for n in range(BLOCK + 1))
_ZERO_BLOCK = bytes(BLOCK)
_CENT = Decimal("0.01")

DEFAULT_TIMEOUT = 10.0
LOGIN_SAMPLES_MAX = 20


# --------------------------------------------------------------------------
# Errores
# --------------------------------------------------------------------------


class ProtocolError(Exception):
    """Fallo de protocolo (sección 6): la conexión ya no sirve y hay que cerrarla.

    ``kind`` es la clave breve con la que se cuenta en ``errores``.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class ReplyError(Exception):
    """La respuesta pasó MAC y relleno pero no cumple el contrato (campos, tipos, id).

    El canal sigue sincronizado (la secuencia avanzó bien), así que se puede
    seguir usando, pero la operación queda en duda.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class ServerError(Exception):
    """Respuesta de error bien formada del servidor: ``{"ok": false, "error": CODE, ...}``."""

    def __init__(self, code: str, mensaje: str) -> None:
        super().__init__(f"{code}: {mensaje}")
        self.code = code
        self.mensaje = mensaje


# --------------------------------------------------------------------------
# Llave compartida (sección 2)
# --------------------------------------------------------------------------


def parse_psk(text: str, name: str = "llave.key") -> bytes:
    """Lee la PSK del texto de un fichero de llave, con las reglas de la sección 2.

    Se ignoran las líneas en blanco y las que empiezan por ``#``; la primera
    otra línea debe ser exactamente 64 dígitos hexadecimales (solo se quita el
    fin de línea). Los errores nombran el fichero y nunca muestran la línea,
    porque podría ser la llave.
    """
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if not _HEX_KEY.fullmatch(line):
            raise ValueError(
                f"El fichero de llave {name} no es válido: la primera línea que no es comentario "
                "debe tener exactamente 64 dígitos hexadecimales y nada más."
            )
        return bytes.fromhex(line)
    raise ValueError(f"El fichero de llave {name} no contiene ninguna llave (64 dígitos hexadecimales).")


def load_psk(path: str | os.PathLike[str]) -> bytes:
    """Lee y valida el fichero de llave ``path``; los errores lo nombran."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"No se pudo leer el fichero de llave {p}: {exc.__class__.__name__}") from None
    return parse_psk(text, str(p))


# --------------------------------------------------------------------------
# Tramas (sección 1)
# --------------------------------------------------------------------------


def encode_frame(payload: bytes) -> bytes:
    """Antepone la longitud de 4 bytes big-endian; rechaza cargas vacías o mayores de 65 536."""
    n = len(payload)
    if not 0 < n <= MAX_FRAME:
        raise ValueError(f"carga de trama de {n} bytes fuera de 1..{MAX_FRAME}")
    return n.to_bytes(4, "big") + payload


def read_frame(reader: BinaryIO) -> bytes:
    """Lee una trama completa de ``reader`` (un fichero de socket con búfer).

    Con búfer, la cabecera y la carga suelen llegar en una sola llamada al
    sistema, lo que abarata el cliente. Toda anomalía es :class:`ProtocolError`.
    """
    try:
        header = reader.read(4)
        if len(header) < 4:
            if not header:
                raise ProtocolError("conexion_cerrada", "el servidor cerró la conexión")
            raise ProtocolError("trama_truncada", "la conexión se cerró a mitad de la cabecera")
        n = int.from_bytes(header, "big")
        if n == 0 or n > MAX_FRAME:
            raise ProtocolError("trama_invalida", f"longitud de trama {n} fuera de 1..{MAX_FRAME}")
        payload = reader.read(n)
    except TimeoutError:
        raise ProtocolError("tiempo_agotado", "el servidor no respondió a tiempo") from None
    except OSError as exc:
        raise ProtocolError("error_de_red", f"{exc.__class__.__name__}: {exc}") from None
    if len(payload) < n:
        raise ProtocolError("trama_truncada", f"la conexión se cerró tras {len(payload)} de {n} bytes")
    return payload


# --------------------------------------------------------------------------
# Saludo y claves de sesión (sección 3)
# --------------------------------------------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 según RFC 5869 (extraer y expandir), con ``hmac`` de la biblioteca estándar."""
    if length > 255 * 32:
        raise ValueError("HKDF-SHA256 no puede producir más de 8160 bytes")
    prk = hmac.digest(salt, ikm, "sha256")
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        okm += block
        counter += 1
    return okm[:length]


@dataclass(frozen=True)
class SessionKeys:
    """Las cuatro claves de una sesión, en el orden en que salen de HKDF."""

    enc_c2s: bytes
    mac_c2s: bytes
    enc_s2c: bytes
    mac_s2c: bytes


def derive_session_keys(psk: bytes, nonce_c: bytes, nonce_s: bytes) -> SessionKeys:
    """okm = HKDF(PSK, salt = nonce_c || nonce_s, info = "ATM1 session keys", L = 128), partido en 4."""
    okm = hkdf_sha256(psk, nonce_c + nonce_s, HKDF_INFO, 128)
    return SessionKeys(okm[0:32], okm[32:64], okm[64:96], okm[96:128])


def server_proof(mac_s2c: bytes, nonce_c: bytes, nonce_s: bytes) -> bytes:
    """proof = HMAC-SHA256(mac_s2c, "ATM1 server proof" || nonce_c || nonce_s)."""
    return hmac.digest(mac_s2c, PROOF_LABEL + nonce_c + nonce_s, "sha256")


def client_hello(nonce_c: bytes) -> bytes:
    """La trama ClientHello completa (cabecera incluida): "ATM1" || nonce_c."""
    if len(nonce_c) != NONCE_LEN:
        raise ValueError("nonce_c debe tener 32 bytes")
    return encode_frame(MAGIC + nonce_c)


def parse_server_hello(payload: bytes) -> tuple[bytes, bytes]:
    """Separa un ServerHello en (nonce_s, proof); longitud o magia incorrectas son error de protocolo."""
    if len(payload) != SERVER_HELLO_LEN or payload[:4] != MAGIC:
        raise ProtocolError("saludo_invalido", f"ServerHello de {len(payload)} bytes o sin la marca ATM1")
    return payload[4:36], payload[36:68]


def verify_server_hello(psk: bytes, nonce_c: bytes, payload: bytes) -> SessionKeys:
    """Deriva las claves y comprueba la prueba del servidor en tiempo constante.

    Si no coincide, las dos partes tienen llaves distintas: se avisa con
    palabras claras (sin mostrar nada de la llave).
    """
    nonce_s, proof = parse_server_hello(payload)
    keys = derive_session_keys(psk, nonce_c, nonce_s)
    if not hmac.compare_digest(server_proof(keys.mac_s2c, nonce_c, nonce_s), proof):
        raise ProtocolError(
            "prueba_invalida",
            "el servidor no demostró conocer la llave compartida: el cajero y el banco tienen llaves distintas",
        )
    return keys


# --------------------------------------------------------------------------
# Registros (sección 4)
# --------------------------------------------------------------------------


def pkcs7_pad(data: bytes) -> bytes:
    """Relleno PKCS#7 a bloques de 16 (siempre añade de 1 a 16 bytes)."""
    return data + _PADS[BLOCK - len(data) % BLOCK]


def pkcs7_unpad(padded: bytes) -> bytes:
    """Quita el relleno PKCS#7 comprobándolo entero; si no es válido, error de protocolo."""
    n = padded[-1] if padded else 0
    if not 1 <= n <= BLOCK or len(padded) < n or padded[-n:] != _PADS[n]:
        raise ProtocolError("relleno_invalido", "relleno PKCS#7 incorrecto")
    return padded[:-n]


def _record_tag(mac_key: bytes, seq: int, iv_and_c: bytes) -> bytes:
    return hmac.digest(mac_key, seq.to_bytes(8, "big") + iv_and_c, "sha256")


def seal_record(enc_key: bytes, mac_key: bytes, seq: int, iv: bytes, plaintext: bytes) -> bytes:
    """Versión de referencia, literal del contrato: IV || AES-256-CBC(pad(p)) || HMAC(seq || IV || C).

    El bucle de carga usa :class:`RecordSealer`, que da los mismos bytes más barato;
    las pruebas comprueban ambos contra los vectores.
    """
    c = AES.new(enc_key, AES.MODE_CBC, iv=iv).encrypt(pkcs7_pad(plaintext))
    return iv + c + _record_tag(mac_key, seq, iv + c)


def open_record(enc_key: bytes, mac_key: bytes, seq: int, payload: bytes) -> bytes:
    """Versión de referencia de la recepción, en el orden obligado: longitudes, MAC, descifrar, relleno."""
    n = len(payload)
    if n < MIN_RECORD or (n - BLOCK - TAG_LEN) % BLOCK:
        raise ProtocolError("registro_invalido", f"registro de {n} bytes")
    if not hmac.compare_digest(_record_tag(mac_key, seq, payload[:-TAG_LEN]), payload[-TAG_LEN:]):
        raise ProtocolError("mac_invalida", "la etiqueta del registro no coincide")
    iv, c = payload[:BLOCK], payload[BLOCK:-TAG_LEN]
    return pkcs7_unpad(AES.new(enc_key, AES.MODE_CBC, iv=iv).decrypt(c))


def _xor_block(a: bytes, b: int, c: bytes) -> bytes:
    """a ^ b ^ c sobre 16 bytes (b ya como entero)."""
    return (int.from_bytes(a, "big") ^ b ^ int.from_bytes(c, "big")).to_bytes(BLOCK, "big")


class RecordSealer:
    """Cifra y autentica los registros de una dirección, llevando su ``seq``.

    Para abaratar el cliente se precalcula por conexión lo que se puede:

    * Un único objeto AES-CBC por dirección, en vez de uno por registro (crear
      el objeto cuesta unas tres veces más que cifrar ~100 bytes). Un objeto
      CBC que se reutiliza encadena con el último bloque cifrado ``S``; para
      obtener el CBC con un IV nuevo ``X`` basta con cifrar el primer bloque
      como ``P1 ^ S ^ X``: AES(P1 ^ S ^ X ^ S) = AES(P1 ^ X), que es justo
      el primer bloque de CBC con IV ``X``; el resto del encadenamiento es
      idéntico. El IV sigue siendo aleatorio y nuevo en cada registro.
    * El objeto HMAC con la clave ya cargada, que se copia para cada registro.
    """

    __slots__ = ("_cbc", "_chain", "_iv_source", "_mac", "seq")

    def __init__(self, enc_key: bytes, mac_key: bytes, iv_source: Callable[[int], bytes] = os.urandom) -> None:
        self._cbc = AES.new(enc_key, AES.MODE_CBC, iv=_ZERO_BLOCK)
        self._chain = 0
        self._mac = hmac.new(mac_key, digestmod=hashlib.sha256)
        self._iv_source = iv_source
        self.seq = 0

    def seal(self, plaintext: bytes) -> bytes:
        """Devuelve la carga del registro (IV || C || T) para ``plaintext`` y avanza ``seq``."""
        iv = self._iv_source(BLOCK)
        padded = plaintext + _PADS[BLOCK - len(plaintext) % BLOCK]
        c = self._cbc.encrypt(_xor_block(padded[:BLOCK], self._chain, iv) + padded[BLOCK:])
        self._chain = int.from_bytes(c[-BLOCK:], "big")
        body = iv + c
        h = self._mac.copy()
        h.update(self.seq.to_bytes(8, "big"))
        h.update(body)
        self.seq += 1
        return body + h.digest()


class RecordOpener:
    """Comprueba y descifra los registros de una dirección, llevando su ``seq``.

    Mismo truco que :class:`RecordSealer`: el descifrador CBC reutilizado
    devuelve ``D(C1) ^ S`` en el primer bloque; se corrige con ``^ S ^ IV``.
    El orden de las comprobaciones es el que exige la sección 4.
    """

    __slots__ = ("_cbc", "_chain", "_mac", "seq")

    def __init__(self, enc_key: bytes, mac_key: bytes) -> None:
        self._cbc = AES.new(enc_key, AES.MODE_CBC, iv=_ZERO_BLOCK)
        self._chain = 0
        self._mac = hmac.new(mac_key, digestmod=hashlib.sha256)
        self.seq = 0

    def open(self, payload: bytes) -> bytes:
        """Devuelve el texto claro sin relleno; cualquier fallo es :class:`ProtocolError`."""
        n = len(payload)
        if n < MIN_RECORD or (n - BLOCK - TAG_LEN) % BLOCK:
            raise ProtocolError("registro_invalido", f"registro de {n} bytes")
        view = memoryview(payload)
        h = self._mac.copy()
        h.update(self.seq.to_bytes(8, "big"))
        h.update(view[:-TAG_LEN])
        if not hmac.compare_digest(h.digest(), payload[-TAG_LEN:]):
            raise ProtocolError("mac_invalida", f"la etiqueta del registro {self.seq} no coincide")
        self.seq += 1
        c = payload[BLOCK:-TAG_LEN]
        raw = self._cbc.decrypt(c)
        padded = _xor_block(raw[:BLOCK], self._chain, payload[:BLOCK]) + raw[BLOCK:]
        self._chain = int.from_bytes(c[-BLOCK:], "big")
        return pkcs7_unpad(padded)


# --------------------------------------------------------------------------
# Mensajes (sección 5)
# --------------------------------------------------------------------------


def encode_message(obj: dict[str, Any]) -> bytes:
    """JSON compacto en UTF-8 (sin escapar lo que no es ASCII), como en los vectores."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def deposit_encoder(amount: str) -> Callable[[str], bytes]:
    """Devuelve una función id -> texto claro de DEPOSITAR, con la parte fija ya codificada.

    Da los mismos bytes que ``encode_message({"op": "DEPOSITAR", "monto": amount, "id": id})``
    sin pasar por ``json.dumps`` en cada petición: el importe y el id solo
    llevan caracteres que JSON no escapa (se validan aquí y al generar el id).
    """
    if not is_request_amount(amount):
        raise ValueError(f"Importe no válido para el contrato: {amount!r}")
    head = b'{"op":"DEPOSITAR","monto":"' + amount.encode("ascii") + b'","id":"'
    tail = b'"}'

    def encode(tx_id: str) -> bytes:
        return head + tx_id.encode("ascii") + tail

    return encode


def is_request_amount(text: str) -> bool:
    """True si ``text`` cumple la gramática de importes de petición y es mayor que cero."""
    return bool(_REQUEST_AMOUNT.fullmatch(text)) and Decimal(text) > 0


def decode_reply(plaintext: bytes) -> dict[str, Any]:
    """UTF-8 estricto (si no, error de protocolo) y un objeto JSON (si no, respuesta inválida)."""
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("utf8_invalido", "el texto claro no es UTF-8") from None
    try:
        obj = json.loads(text)
    except ValueError:
        raise ReplyError("json_invalido", "la respuesta no es JSON") from None
    if not isinstance(obj, dict):
        raise ReplyError("respuesta_invalida", "la respuesta no es un objeto JSON")
    return obj


def mask_card(card: str) -> str:
    """La tarjeta enmascarada como la devuelve CONSULTAR: todo menos los 4 últimos dígitos como ``*``."""
    return "*" * (len(card) - 4) + card[-4:]


def _reply_amount(reply: dict[str, Any], field: str) -> Decimal:
    value = reply.get(field)
    if type(value) is not str or not _REPLY_AMOUNT.fullmatch(value):
        raise ReplyError("respuesta_invalida", f"'{field}' no es un importe con dos decimales: {value!r}")
    return Decimal(value)


def check_reply(op: str, reply: dict[str, Any], tx_id: str | None = None, card: str | None = None) -> dict[str, Any]:
    """Comprueba una respuesta a ``op`` según la sección 5 y la devuelve si es un éxito.

    Un error bien formado se lanza como :class:`ServerError`; una respuesta
    que no cumple el contrato, como :class:`ReplyError`.
    """
    ok = reply.get("ok")
    if ok is False:
        code = reply.get("error")
        if type(code) is not str or code not in ERROR_CODES:
            raise ReplyError("codigo_desconocido", f"código de error fuera del contrato: {code!r}")
        mensaje = reply.get("mensaje")
        if type(mensaje) is not str:
            raise ReplyError("respuesta_invalida", f"error {code} sin 'mensaje' de texto")
        if code == "PIN_INCORRECTO" and type(reply.get("intentos_restantes")) is not int:
            raise ReplyError("respuesta_invalida", "PIN_INCORRECTO sin 'intentos_restantes' entero")
        raise ServerError(code, mensaje)
    if ok is not True:
        raise ReplyError("respuesta_invalida", f"'ok' no es booleano: {ok!r}")
    if op in ("DEPOSITAR", "RETIRAR"):
        if reply.get("id") != tx_id:
            raise ReplyError("id_distinto", f"la respuesta trae el id {reply.get('id')!r} y se envió {tx_id!r}")
        _reply_amount(reply, "saldo")
        if type(reply.get("repetida", False)) is not bool:
            raise ReplyError("respuesta_invalida", "'repetida' no es booleano")
    elif op == "IDENTIFICAR":
        if type(reply.get("titular")) is not str:
            raise ReplyError("respuesta_invalida", "IDENTIFICAR sin 'titular'")
    elif op == "CONSULTAR":
        if type(reply.get("titular")) is not str:
            raise ReplyError("respuesta_invalida", "CONSULTAR sin 'titular'")
        if card is not None and reply.get("tarjeta") != mask_card(card):
            raise ReplyError("respuesta_invalida", "CONSULTAR devuelve la tarjeta mal enmascarada")
        _reply_amount(reply, "saldo")
    return reply


# --------------------------------------------------------------------------
# Conexión de un cajero
# --------------------------------------------------------------------------


class Connection:
    """Una sesión ATM1 ya establecida sobre un socket TCP."""

    def __init__(
        self,
        sock: socket.socket,
        reader: BinaryIO,
        keys: SessionKeys,
        iv_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._sock = sock
        self._reader = reader
        self._sealer = RecordSealer(keys.enc_c2s, keys.mac_c2s, iv_source)
        self._opener = RecordOpener(keys.enc_s2c, keys.mac_s2c)

    @classmethod
    def open(cls, host: str, port: int, psk: bytes, timeout: float = DEFAULT_TIMEOUT) -> Connection:
        """Conecta, hace el saludo ATM1 y verifica la prueba del servidor."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise ProtocolError("tiempo_agotado", f"no se pudo conectar a {host}:{port} a tiempo") from None
        except OSError as exc:
            raise ProtocolError("conexion_fallida", f"no se pudo conectar a {host}:{port}: {exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return cls.handshake(sock, psk)
        except BaseException:
            sock.close()
            raise

    @classmethod
    def handshake(
        cls,
        sock: socket.socket,
        psk: bytes,
        nonce_c: bytes | None = None,
        iv_source: Callable[[int], bytes] = os.urandom,
    ) -> Connection:
        """Hace el saludo sobre ``sock`` ya conectado (``nonce_c`` e ``iv_source`` solo para pruebas)."""
        if nonce_c is None:
            nonce_c = os.urandom(NONCE_LEN)
        try:
            sock.sendall(client_hello(nonce_c))
        except OSError as exc:
            raise ProtocolError("error_de_red", f"no se pudo enviar el saludo: {exc}") from None
        reader = sock.makefile("rb")
        try:
            keys = verify_server_hello(psk, nonce_c, read_frame(reader))
        except BaseException:
            reader.close()
            raise
        return cls(sock, reader, keys, iv_source)

    def request_bytes(self, plaintext: bytes) -> dict[str, Any]:
        """Envía un texto claro ya codificado y devuelve la respuesta como objeto JSON (sin comprobar campos)."""
        payload = self._sealer.seal(plaintext)
        try:
            self._sock.sendall(len(payload).to_bytes(4, "big") + payload)
        except TimeoutError:
            raise ProtocolError("tiempo_agotado", "el servidor no acepta datos") from None
        except OSError as exc:
            raise ProtocolError("error_de_red", f"{exc.__class__.__name__}: {exc}") from None
        return decode_reply(self._opener.open(read_frame(self._reader)))

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Envía una petición y devuelve la respuesta comprobada (o lanza ServerError/ReplyError)."""
        reply = self.request_bytes(encode_message(obj))
        return check_reply(obj["op"], reply, obj.get("id"), obj.get("tarjeta"))

    def identify(self, card: str, pin: str) -> str:
        """IDENTIFICAR; devuelve el titular."""
        return self.request({"op": "IDENTIFICAR", "tarjeta": card, "pin": pin})["titular"]

    def balance(self, card: str) -> Decimal:
        """CONSULTAR; comprueba la tarjeta enmascarada y devuelve el saldo."""
        reply = self.request_bytes(encode_message({"op": "CONSULTAR"}))
        return Decimal(check_reply("CONSULTAR", reply, card=card)["saldo"])

    def logout(self, timeout: float = 5.0) -> None:
        """SALIR: el servidor responde y después cierra; se comprueba también el cierre."""
        self.request({"op": "SALIR"})
        self._sock.settimeout(timeout)
        try:
            extra = self._reader.read(1)
        except TimeoutError:
            raise ProtocolError("salir_sin_cierre", "el servidor no cerró la conexión tras SALIR") from None
        except OSError:
            return  # reinicio de la conexión: también es un cierre
        if extra:
            raise ProtocolError("datos_tras_salir", "el servidor envió datos después de responder a SALIR")

    def close(self) -> None:
        """Cierra el socket sin esperar nada más."""
        for closer in (self._reader.close, self._sock.close):
            try:
                closer()
            except OSError:
                pass


# --------------------------------------------------------------------------
# Proceso de un cajero
# --------------------------------------------------------------------------


@dataclass
class AtmTask:
    """Lo que necesita un proceso cajero; se puede serializar (``spawn``)."""

    index: int
    host: str
    port: int
    psk: bytes
    card: str
    pin: str
    amount: str
    warmup: float
    window: float
    check_balance: bool
    timeout: float
    barrier_timeout: float


def _count(errors: dict[str, int], kind: str) -> None:
    errors[kind] = errors.get(kind, 0) + 1


def _say(message: str) -> None:
    """Diagnóstico a stderr en una sola escritura, para que no se mezclen las líneas de varios cajeros."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _atm_worker(task: AtmTask, barrier: Any, results: Any) -> None:
    """Cuerpo de un proceso cajero: conectar, identificarse, esperar a todos, depositar en bucle, SALIR.

    Siempre deja un resultado en ``results`` (aunque falle), para que el
    proceso padre nunca tenga que adivinar qué pasó.
    """
    out: dict[str, Any] = {
        "indice": task.index,
        "tarjeta": task.card,
        "completo": False,
        "ok_total": 0,
        "ok_en_ventana": 0,
        "en_duda": 0,
        "latencias": array("d"),
        "errores": {},
        "cpu_ventana_s": 0.0,
        "saldo_inicial": None,
        "saldo_final": None,
    }
    errors: dict[str, int] = out["errores"]
    conn: Connection | None = None
    try:
        try:
            conn = Connection.open(task.host, task.port, task.psk, task.timeout)
            conn.identify(task.card, task.pin)
            saldo = conn.balance(task.card)
            out["saldo_inicial"] = out["saldo_final"] = str(saldo)
        except (ProtocolError, ReplyError) as exc:
            _count(errors, exc.kind)
            _say(f"cajero {task.index}: no pudo empezar la sesión ({exc.kind}: {exc.detail})")
            barrier.abort()
            return
        except ServerError as exc:
            _count(errors, exc.code)
            _say(f"cajero {task.index}: el banco rechazó la identificación ({exc.code}: {exc.mensaje})")
            barrier.abort()
            return
        try:
            barrier.wait(task.barrier_timeout)
        except threading.BrokenBarrierError:
            _count(errors, "barrera_rota")
            _say(f"cajero {task.index}: otro cajero no pudo empezar; no se hace la carga")
            conn.logout()
            out["completo"] = False
            return
        if _deposit_loop(task, conn, out, saldo):
            conn.logout()
            out["completo"] = True
    except (ProtocolError, ReplyError) as exc:
        _count(errors, exc.kind)
        _say(f"cajero {task.index}: {exc.kind}: {exc.detail}")
    except ServerError as exc:
        _count(errors, exc.code)
        _say(f"cajero {task.index}: error del banco {exc.code}: {exc.mensaje}")
    except Exception as exc:  # un fallo propio del cliente se informa, nunca se pierde en silencio
        _count(errors, "fallo_del_cliente")
        _say(f"cajero {task.index}: fallo inesperado del cliente: {exc!r}")
    finally:
        if conn is not None:
            conn.close()
        results.put(out)


def _deposit_loop(task: AtmTask, conn: Connection, out: dict[str, Any], saldo: Decimal) -> bool:
    """Bucle cerrado de depósitos. Devuelve False si la conexión quedó inservible.

    Se cuentan en la ventana los depósitos OK cuya respuesta llega entre el
    fin del calentamiento y el fin de la ventana; el que está en vuelo al
    cerrarse la ventana se completa y suma al total depositado, pero no a tx/s.
    """
    errors: dict[str, int] = out["errores"]
    lat = out["latencias"]
    encode = deposit_encoder(task.amount)
    amount = Decimal(task.amount)
    # Id único: prefijo aleatorio de 96 bits por proceso + contador. Cumple
    # [A-Za-z0-9_-]{1,64} y no se repite entre cajeros ni entre ejecuciones
    # (el banco recuerda ids 24 h), sin el coste de un UUID por petición.
    prefix = os.urandom(12).hex() + "-"
    perf = time.perf_counter
    cpu = time.process_time
    request = conn.request_bytes
    check_balance = task.check_balance
    ok_total = ok_window = 0
    counter = 0
    start = perf()
    warm_end = start + task.warmup
    win_end = warm_end + task.window
    cpu_start: float | None = None
    alive = True
    try:
        while True:
            t0 = perf()
            if t0 >= win_end:
                break
            if cpu_start is None and t0 >= warm_end:
                cpu_start = cpu()
            counter += 1
            tx_id = prefix + str(counter)
            try:
                reply = check_reply("DEPOSITAR", request(encode(tx_id)), tx_id)
            except ProtocolError as exc:
                out["en_duda"] += 1
                _count(errors, exc.kind)
                _say(f"cajero {task.index}: {exc.kind}: {exc.detail}")
                alive = False
                break
            except ReplyError as exc:
                out["en_duda"] += 1
                _count(errors, exc.kind)
                continue
            except ServerError as exc:
                _count(errors, exc.code)
                continue
            t1 = perf()
            if reply.get("repetida") is True:
                # Con ids nuevos no puede haber repetición: el banco no aplicó nada ahora.
                _count(errors, "repetida_inesperada")
                continue
            ok_total += 1
            new_saldo = Decimal(reply["saldo"])
            if check_balance and new_saldo != saldo + amount:
                _count(errors, "saldo_inesperado")
            saldo = new_saldo
            if warm_end <= t1 < win_end:
                ok_window += 1
                lat.append(t1 - t0)
    finally:
        # También si algo inesperado corta el bucle: lo ya depositado debe constar.
        out["cpu_ventana_s"] = cpu() - cpu_start if cpu_start is not None else 0.0
        out["ok_total"] = ok_total
        out["ok_en_ventana"] = ok_window
        out["saldo_final"] = str(saldo)
    return alive


# --------------------------------------------------------------------------
# Medida de sesiones
# --------------------------------------------------------------------------


def _measure_sessions(
    host: str, port: int, psk: bytes, card: tuple[str, str], count: int, timeout: float, errors: dict[str, int]
) -> tuple[list[float], list[float]]:
    """Abre ``count`` conexiones seguidas: tiempo de conexión + saludo y, en las 20 primeras, de identificación."""
    setup: list[float] = []
    login: list[float] = []
    perf = time.perf_counter
    for i in range(count):
        conn: Connection | None = None
        try:
            t0 = perf()
            conn = Connection.open(host, port, psk, timeout)
            setup.append(perf() - t0)
            if i < LOGIN_SAMPLES_MAX:
                t0 = perf()
                conn.identify(*card)
                login.append(perf() - t0)
            conn.logout()
        except (ProtocolError, ReplyError) as exc:
            _count(errors, exc.kind)
            _say(f"sesión {i}: {exc.kind}: {exc.detail}")
        except ServerError as exc:
            _count(errors, exc.code)
            _say(f"sesión {i}: error del banco {exc.code}: {exc.mensaje}")
        finally:
            if conn is not None:
                conn.close()
    return setup, login


# --------------------------------------------------------------------------
# Proceso padre
# --------------------------------------------------------------------------


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Percentil por rango más cercano sobre una lista ya ordenada."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _summary_ms(values: Sequence[float], with_max: bool = False) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        out: dict[str, Any] = {"p50": None, "p99": None}
        if with_max:
            out["max"] = None
        return out
    out = {"p50": round(_percentile(ordered, 50) * 1000, 3), "p99": round(_percentile(ordered, 99) * 1000, 3)}
    if with_max:
        out["max"] = round(ordered[-1] * 1000, 3)
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _validate_cards(cards: Sequence[tuple[str, str]], n_atms: int) -> None:
    if n_atms < 1:
        raise ValueError("Hace falta al menos un cajero.")
    if len(cards) < n_atms:
        raise ValueError(
            f"Hay {len(cards)} tarjetas y se pidieron {n_atms} cajeros: hace falta una tarjeta por cajero."
        )
    for i, (card, pin) in enumerate(cards[:n_atms]):
        if not isinstance(card, str) or not _CARD.fullmatch(card):
            raise ValueError(f"La tarjeta número {i} no tiene entre 12 y 19 dígitos.")
        if not isinstance(pin, str) or not _PIN.fullmatch(pin):
            raise ValueError(f"El PIN de la tarjeta número {i} no tiene entre 4 y 6 dígitos.")


def run(
    host: str,
    port: int,
    psk: bytes,
    cards: list[tuple[str, str]],
    n_atms: int,
    warmup: float,
    window: float,
    amount: str = "1.00",
    sessions: int = 0,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    start_method: str | None = None,
    on_window: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Ejecuta la prueba de carga y devuelve el informe (el mismo objeto que imprime la CLI).

    ``cards[i]`` = (tarjeta, pin) del cajero ``i``. ``start_method`` elige el
    arranque de multiprocessing (``None``: el de la plataforma). Lanza
    ``ValueError`` con un mensaje en castellano si los argumentos no valen.

    ``on_window`` (para quien mide el servidor al mismo tiempo, como
    ``bench/run.py``) se llama desde un hilo del proceso padre con
    ``"inicio"``, ``"mitad"`` y ``"fin"`` de la ventana medida, con el mismo
    reloj que usan los cajeros: el padre espera en la misma barrera.
    """
    if len(psk) != PSK_LEN:
        raise ValueError("La llave compartida debe tener 32 bytes.")
    if not is_request_amount(amount):
        raise ValueError(f"El importe {amount!r} no cumple la gramática del contrato o no es mayor que cero.")
    if warmup < 0 or window <= 0:
        raise ValueError("El calentamiento no puede ser negativo y la ventana debe ser positiva.")
    if sessions < 0:
        raise ValueError("El número de sesiones no puede ser negativo.")
    cards = [(str(c), str(p)) for c, p in cards]
    _validate_cards(cards, n_atms)
    used = cards[:n_atms]
    unique = len({c for c, _ in used}) == n_atms
    if not unique:
        _say("aviso: hay tarjetas repetidas entre los cajeros; no se comprobará la continuidad de los saldos")

    errors: dict[str, int] = {}
    session_report: dict[str, Any] = {}
    if sessions:
        setup, login = _measure_sessions(host, port, psk, used[0], sessions, timeout, errors)
        session_report["sesion_ms"] = {**_summary_ms(setup), "n": len(setup)}
        session_report["login_ms"] = {**_summary_ms(login), "n": len(login)}

    ctx = multiprocessing.get_context(start_method)
    barrier_timeout = 30.0 + 2.0 * n_atms
    barrier = ctx.Barrier(n_atms + (on_window is not None))
    result_queue = ctx.Queue()
    tasks = [
        AtmTask(i, host, port, psk, used[i][0], used[i][1], amount, warmup, window, unique, timeout, barrier_timeout)
        for i in range(n_atms)
    ]
    procs = [ctx.Process(target=_atm_worker, args=(t, barrier, result_queue), name=f"cajero-{t.index}") for t in tasks]
    # Plazo global: arranque + calentamiento + ventana + lo que tarde el último
    # depósito y SALIR, con margen. Si el servidor se cuelga, los sockets
    # vencen antes; esto es la red de seguridad.
    deadline = time.monotonic() + barrier_timeout + warmup + window + 4 * timeout + 15.0
    results: list[dict[str, Any]] = []
    cpu_before = _children_cpu()
    observer = None
    if on_window is not None:
        observer = threading.Thread(
            target=_observe_window, args=(barrier, barrier_timeout, warmup, window, on_window), daemon=True
        )
    try:
        for p in procs:
            p.start()
        if observer is not None:
            observer.start()
        while len(results) < n_atms and time.monotonic() < deadline:
            try:
                results.append(result_queue.get(timeout=0.25))
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    # Todos terminaron: lo que quede ya está en la tubería.
                    try:
                        while len(results) < n_atms:
                            results.append(result_queue.get(timeout=1.0))
                    except queue.Empty:
                        pass
                    break
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if observer is not None:
            observer.join(max(0.0, deadline - time.monotonic()) + 1.0)
    finally:
        for p in procs:
            if p.is_alive():
                _say(f"{p.name}: no terminó a tiempo; se detiene")
                p.terminate()
                p.join(5.0)
                if p.is_alive():
                    p.kill()
                    p.join()
        result_queue.close()
    cpu_children = _children_cpu() - cpu_before

    by_index = {r["indice"]: r for r in results}
    amount_dec = Decimal(amount)
    deposited: dict[str, Decimal] = {}
    in_doubt: dict[str, int] = {}
    balances: dict[str, dict[str, Any]] = {}
    latencies: array[float] = array("d")
    per_atm: list[dict[str, Any]] = []
    ok_window = 0
    cpu_window = 0.0
    complete = 0
    for i, (card, _pin) in enumerate(used):
        r = by_index.get(i)
        deposited.setdefault(card, Decimal(0))
        if r is None:
            _count(errors, "proceso_perdido")
            _say(f"cajero {i}: el proceso terminó sin informar (código de salida {procs[i].exitcode})")
            continue
        for kind, n in r["errores"].items():
            errors[kind] = errors.get(kind, 0) + n
        deposited[card] += amount_dec * r["ok_total"]
        if r["en_duda"]:
            in_doubt[card] = in_doubt.get(card, 0) + r["en_duda"]
        balances[card] = {"inicial": r["saldo_inicial"], "final": r["saldo_final"]}
        latencies.extend(r["latencias"])
        ok_window += r["ok_en_ventana"]
        cpu_window += r["cpu_ventana_s"]
        complete += bool(r["completo"])
        per_atm.append({"tarjeta": card, "ok_en_ventana": r["ok_en_ventana"], "ok_total": r["ok_total"]})

    return {
        "cajeros": n_atms,
        "cajeros_completos": complete,
        "calentamiento_s": warmup,
        "ventana_s": window,
        "monto": amount,
        "ok_en_ventana": ok_window,
        "tx_s": round(ok_window / window, 1),
        "latencia_ms": _summary_ms(latencies, with_max=True),
        "errores": dict(sorted(errors.items())),
        "depositado": {c: str(v.quantize(_CENT)) for c, v in deposited.items()},
        "depositos_en_duda": in_doubt,
        "saldos": balances,
        **session_report,
        "cliente_cpu_s": round(cpu_children, 3),
        "cliente_cpu_ventana_s": round(cpu_window, 3),
        "cpu_por_tx_ms": round(cpu_window / ok_window * 1000, 4) if ok_window else None,
        "por_cajero": per_atm,
    }


def _observe_window(
    barrier: Any, barrier_timeout: float, warmup: float, window: float, on_window: Callable[[str], None]
) -> None:
    """Hilo del padre: sale de la barrera con los cajeros y avisa al principio, a la mitad y al final de la ventana."""
    try:
        barrier.wait(barrier_timeout)
    except threading.BrokenBarrierError:
        return
    start = time.monotonic() + warmup
    for label, at in (("inicio", start), ("mitad", start + window / 2), ("fin", start + window)):
        time.sleep(max(0.0, at - time.monotonic()))
        on_window(label)


def succeeded(report: dict[str, Any]) -> bool:
    """True si todos los cajeros terminaron su sesión y no hubo ningún error."""
    return report["cajeros_completos"] == report["cajeros"] and not report["errores"]


def _load_cards(path: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"No se pudo leer el fichero de tarjetas {path}: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"El fichero de tarjetas {path} debe ser una lista JSON de {{'tarjeta', 'pin'}}.")
    cards: list[tuple[str, str]] = []
    for i, item in enumerate(data):
        if not (isinstance(item, dict) and isinstance(item.get("tarjeta"), str) and isinstance(item.get("pin"), str)):
            raise ValueError(f"La entrada {i} de {path} no es un objeto con 'tarjeta' y 'pin' de texto.")
        cards.append((item["tarjeta"], item["pin"]))
    return cards


def main(argv: Sequence[str] | None = None) -> int:
    """Punto de entrada de la línea de órdenes; devuelve el código de salida."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.contract_load",
        description="Carga de depósitos contra el banco con un cliente escrito solo a partir de PROTOCOL.md.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="dirección del banco")
    parser.add_argument("--puerto", type=int, required=True, help="puerto del banco")
    parser.add_argument("--llave", required=True, help="fichero de la llave compartida (llave.key)")
    parser.add_argument("--tarjetas", required=True, help="JSON: lista de {'tarjeta', 'pin'}; el cajero i usa la i")
    parser.add_argument("--cajeros", type=int, required=True, help="número de procesos cajero")
    parser.add_argument("--calentamiento", type=float, default=1.5, help="segundos de calentamiento sin medir")
    parser.add_argument("--ventana", type=float, default=5.0, help="segundos de la ventana medida")
    parser.add_argument("--monto", default="1.00", help="importe de cada depósito (texto decimal)")
    parser.add_argument("--sesiones", type=int, default=0, help="conexiones a medir antes de la carga")
    parser.add_argument("--tiempo-limite", type=float, default=DEFAULT_TIMEOUT, help="plazo de cada socket (s)")
    parser.add_argument(
        "--arranque",
        choices=("fork", "spawn", "forkserver"),
        default=None,
        help="método de arranque de los procesos (por defecto, el de la plataforma)",
    )
    args = parser.parse_args(argv)
    try:
        psk = load_psk(args.llave)
        cards = _load_cards(args.tarjetas)
        report = run(
            args.host,
            args.puerto,
            psk,
            cards,
            args.cajeros,
            args.calentamiento,
            args.ventana,
            args.monto,
            args.sesiones,
            timeout=args.tiempo_limite,
            start_method=args.arranque,
        )
    except ValueError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("interrumpido")
        return 1
    print(json.dumps(report, ensure_ascii=False))
    ok = succeeded(report)
    if not ok:
        _say(
            f"la prueba terminó con errores: {report['errores']} "
            f"({report['cajeros_completos']} de {report['cajeros']} cajeros completos)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
