"""The reproduction studies' analyses on the ported models: flip rates of AttFind against Wu et
al., GANSpace and random (``fliprate``), Wu et al.'s selection (``wu``), GANSpace (``ganspace``).

Layer: above ``attfind``. It may import ``models_pt``, ``porting``, ``attfind`` and the release
facts; nothing below imports it (a test walks the imports).
"""
