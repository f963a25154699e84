"""medvlm: load local medical VLM checkpoints, adapters, grounded and safe generation, backends."""
