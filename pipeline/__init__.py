"""Runtime, dataset I/O, workflows (collect, ...) and the `sam2grasp` command line."""
