"""Images at the edges of adaptir: file I/O (bit depth, alpha, EXIF/ICC) and tiled inference."""
