"""One module per subcommand; each exposes `cli`, a click.Command. Parsing and
printing only: every command makes one call into sessctl.service (or a sibling use-case
module) and renders what comes back."""
