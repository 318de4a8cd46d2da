"""The project's own namespace: the release facts every layer shares (``release_facts``, the
bottom) and the command line (``cli``, the top), so that nothing generic is installed at the
top level of site-packages."""
