"""The command line: parsing and dispatch, and one module per command."""
