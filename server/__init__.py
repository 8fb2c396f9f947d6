"""The HTTP search API and web page (imported as vdr.server), a thin layer over vdr.Index."""
