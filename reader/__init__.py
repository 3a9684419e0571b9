"""Reading the member's bank chip card (EMV / PBOC) through PC/SC."""
