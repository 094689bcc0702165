"""Data layer: raster/vector I/O with rasterio and geopandas, alignment, tiling, transforms (no nn.Module)."""
