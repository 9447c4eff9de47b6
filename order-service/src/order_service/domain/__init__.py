"""The order aggregate. Pure: nothing here performs I/O."""
