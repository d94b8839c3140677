"""Code shared by two or more components: seeding, atomic file writes, likelihoods, uncertainty, layers."""
