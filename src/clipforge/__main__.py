from clipforge.cli.main import entry

entry()
