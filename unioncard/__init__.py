"""The `unioncard` command line and the demo: the wiring above every part."""
