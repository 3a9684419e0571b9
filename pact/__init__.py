"""pact: what the union and its partner shops agree on, in a form both can check.

The signed formats (root and role keys, snapshot, roster, policy), the money
rules (basket, discount engine, fen), card tokens, the sale record and its hash
chain, and the formats on the wire. The union builds these, terminals verify and
apply them, and an outside auditor replays them.

Pure: it imports only the standard library and ``cryptography``, does no network
or database I/O and reads no clock (``now`` is always a parameter). The one
exception is :mod:`pact.files`, the durable-write helper both sides use for the
files they keep.
"""
