"""Paper tables and figures."""
