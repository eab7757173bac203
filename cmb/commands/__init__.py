"""One module per `cmb` sub-command; each defines `register(subparsers)`."""
