"""SAM2 tracker wrapper, features and the ACT action-chunk head (not yet implemented; see the perception and policy issues)."""
