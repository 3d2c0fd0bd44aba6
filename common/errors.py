"""Errors that say whose fault they are (the h11 convention).

``RemoteProtocolError``: the peer broke the contract (bad frame, bad MAC,
bad handshake). The only correct reaction is to close the connection
without sending anything more (PROTOCOL.md section 7; section 6 in ATM1).

``LocalProtocolError``: *our* code tried to do something the contract
forbids (send before the handshake, send a frame that is too large). It
is a bug on this side, never something a peer can trigger.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class for every contract violation."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the contract does not allow."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the contract does not allow."""


class KeyFileError(Exception):
    """A key file (ATM1's shared key, ATM2's terminal key, the bank key) is missing, malformed or unwritable.

    The message names the file and says what is wrong, in Spanish,
    because the administrator reads it. It never contains key material.
    """


class IntegrityError(RemoteProtocolError):
    """A record's tag ``T`` did not match: altered, replayed, reordered, or sealed with other keys."""


class WrongKeyError(RemoteProtocolError):
    """ATM2: the two ends hold different terminal keys.

    The ATM raises it when the server's proof does not match; the bank
    when the first record of a session fails its check (PROTOCOL.md
    section 3), which is how a wrong ATM key shows there (an altered first
    record looks the same).
    """


class HandshakeRefusedError(RemoteProtocolError):
    """ATM2, ATM side: the server closed before its ServerHello.

    That is how the bank refuses a terminal (unknown, revoked, or a key
    version it no longer accepts), or how a server that does not speak
    ATM2 reacts to our hello.
    """
