"""``python -P -m search.cli``: the `hpo` command without its console script (the demo runs steps so)."""

from search.cli import main

main()
