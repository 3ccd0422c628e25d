"""The command-line tools (argument parsing and printing only). ``tools/*.py`` call these."""
