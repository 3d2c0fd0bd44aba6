"""Errors that say whose fault they are (the h11 convention).

``RemoteProtocolError``: the peer broke the contract (bad frame, bad MAC,
bad handshake). The only correct reaction is to close the connection
without sending anything more (PROTOCOL.md section 6).

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
    """The pre-shared key file is missing or malformed.

    The message names the file and says what is wrong, in Spanish,
    because the administrator reads it. It never contains key material.
    """
