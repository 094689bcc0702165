"""Data layer: rasterio/geopandas I/O, alignment, tiling, transforms (no nn.Module)."""
