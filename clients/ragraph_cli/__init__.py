"""The ``ragraph`` command line."""
