"""After-training evaluations of stored runs: OOD detection (:mod:`.ood`, metrics in :mod:`.ood_metrics`) and
adversarial robustness (:mod:`.attacks`). Each returns flat rows and registers its report section."""
