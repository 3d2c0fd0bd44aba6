"""Shared, socket-free pieces of the ATM2 protocol: framing, handshake, records, messages, keys, files.

Everything here is *sans-I/O*: it turns bytes into events and messages
into bytes, and never touches a socket, a thread or a clock that the
caller did not hand in. The bank server and the ATM both build on it,
and the tests drive it through in-memory pairs.
"""
