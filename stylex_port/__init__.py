"""The top floor: the command line (``cli``), the studies' analyses, the downloader and the
training driver; nothing below imports it. The release facts every layer shares are at the
bottom, in ``models_pt.release_facts``."""
