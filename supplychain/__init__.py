"""Supply-chain tooling of the images: hash-locked dependency sets (`locks`) and their SBOMs."""
