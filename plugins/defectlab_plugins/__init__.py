"""The built-in defectlab plugins, one package each, registered through entry points like any other."""
