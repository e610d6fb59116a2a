"""``python -m adapter`` is the ``adapter`` command."""

from adapter.ops.cli import main

main()
