"""``tf2torch transfer``: the Keras weights inside a module the user wrote, with the mapping found by itself."""
