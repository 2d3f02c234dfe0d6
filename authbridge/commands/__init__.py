"""One module per ``authbridge`` sub-command."""
