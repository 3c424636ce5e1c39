"""The compact grounder: a small detector of the cell's objects with colour and shape heads, trained on
simulated renders, plus the rules that turn a parsed command into one of its detections."""
