"""A payment-card emulator for the demo and the tests, in three modules.

- :mod:`reader.emulation.images`: the card as data. A ``CardImage`` lists a card's
  applications and behaviours; ``PROFILES`` builds one from a PAN and an expiry
  date. Pure.
- :mod:`reader.emulation.responder`: ``EmulatedCard`` answers command APDUs from an
  image; its ``transmit`` is a ``reader.apdu.Transmit``, for tests without pcscd.
  Pure.
- :mod:`reader.emulation.vpcd`: ``CardEmulator`` puts an ``EmulatedCard`` into
  vsmartcard's vpcd virtual reader over TCP and answers from a thread (an adapter),
  at once or, with ``pace_bps``, at a contactless card's pace (``air_seconds``).
"""
