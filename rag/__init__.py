"""Answer generation over retrieved passages (the prefix-cached generator and `kb ask`)."""
