"""Users and the rules about them. Pure: nothing here performs I/O."""
