"""The napari adapters: reader, widget, menus and sample data (the only Qt code)."""
