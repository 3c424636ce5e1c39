"""SAM2 tracker wrapper, builders, features (F_t) and the compact tracker's training and evaluation."""
