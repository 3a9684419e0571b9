"""The shop side of unioncard: roster, policy, journal, checkout and the daemon."""
