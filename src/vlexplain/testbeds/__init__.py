"""The synthetic worlds with exact ground truth, and the small models trained on them.

* ``.shapes`` / ``.shapes_categories``: the shapes world (scenes, categories, parts, texts, masks);
* ``.shapes_cue`` / ``.spurious``: a badge cue with exact counterfactuals, and the true reliance on it;
* ``.shapes_classes``: labelled shapes-world images (for DEAL);
* ``.grids`` / ``.photos``: grids of real photos and the photos that ship with installed packages;
* ``.testbed_models``: the ``testbed:`` model specs (the shipped shapes-world CLIPs), registered
  with the model registry;
* ``.shapes_train`` (with ``.shapes_losses``, ``.optim``: Muon, ``.vit_init``) and ``.shapes_eval``:
  training and zero-shot evaluation of a shapes-world CLIP.

This package may use ``vlexplain.data`` (readers of users' data) and ``vlexplain.models``; neither
imports it.
"""
