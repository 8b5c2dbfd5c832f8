"""Training: one generic LightningModule around any method (``module``) and the ``train`` entry point
(``train``). Weights files are :mod:`mddpm.weights`, seeds :mod:`mddpm.seeds`, the run folder's
layout :mod:`mddpm.run_folder`."""
