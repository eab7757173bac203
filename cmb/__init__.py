"""cmb package."""
