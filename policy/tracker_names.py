"""Names of the trackers the project builds (no torch import, so the command line can list them cheaply)."""

from __future__ import annotations

#: Official SAM2.1 configurations shipped inside the `sam2` package, at their native 1024 px.
OFFICIAL_CONFIGS: dict[str, str] = {
    "sam2.1-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
#: The compact configuration trained by the project on simulated video (about 2.3 M parameters).
COMPACT = "compact"
