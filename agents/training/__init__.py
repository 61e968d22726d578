"""Training runs: the configuration (:mod:`.config`), the run itself and its folder (:mod:`.experiment`),
checkpoints (:mod:`.checkpoints`) and data-parallel training (:mod:`.distributed`)."""
