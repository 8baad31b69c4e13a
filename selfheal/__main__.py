"""`python -m selfheal`: the same as the `selfheal` command."""
from selfheal.cli.main import main

main()
