"""The bottom layer: atomic files, folder locks, data-parallel helpers; imports nothing above errors."""
