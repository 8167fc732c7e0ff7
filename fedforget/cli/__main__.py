"""``python -m fedforget.cli``: the console command."""

from fedforget.cli import main

main()
