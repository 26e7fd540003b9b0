from fod.cli import entry

entry()
