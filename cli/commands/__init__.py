"""One module per `kb` command. Each parses its options (kb.cli.options), calls one library
function and renders the result (kb.cli.render); heavy imports happen inside the command, so
`kb --help` loads none of them."""
