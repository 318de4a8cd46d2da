"""The command line as the repository runs it: ``python cli.py --help``.

The commands live in ``stylex_port/cli.py`` (installed as the ``stylex-port`` script); this file
only lets a checkout run them without installing anything at the top level of site-packages.
"""
from stylex_port.cli import main

if __name__ == "__main__":
    main()
