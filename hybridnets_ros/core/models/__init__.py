"""The networks this package runs, one folder each."""
