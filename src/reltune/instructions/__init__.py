"""instructions subpackage."""
