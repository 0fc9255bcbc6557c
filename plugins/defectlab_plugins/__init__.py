"""The built-in defectlab plugins, one module each, registered through entry points like any other."""
