"""The dataset layer: Fashion-MNIST from IDX files to in-memory batches.

One module per job, so that a stage depends (in dvc.yaml, and in its resume key) on the parts it
uses: `idx` (the IDX format), `sources` (Fashion-MNIST found or downloaded, bring-your-own image
folders and .npz files), `splits` (the validation split, stored splits), `batches` (serving them).
This package module imports none of them. The path of the data, read top to bottom:

1. ``find_dataset`` finds a folder holding the four IDX files (a configured
   root, the Debian package, an earlier download, or a fresh download).
2. ``load_fashion_mnist`` reads them strictly into uint8 arrays.
3. ``split_train_val`` carves a seeded validation set out of the training set.
4. ``save_split`` / ``load_split`` store the splits as the ``prepare`` stage's
   outputs, so later stages never touch the raw files.
5. ``Batches`` (via ``loader``) serves normalised, optionally augmented
   batches from one float tensor held in memory.

Bring-your-own data enters at ``load_dataset``: besides Fashion-MNIST it reads
an image folder (``train/<class>/<image>``, ``test/<class>/<image>``) or an
``.npz`` file (``x_train``, ``y_train``, ``x_test``, ``y_test``, optional
``classes``) into the same uint8 arrays, so every later step is unchanged.
"""
