"""Device profiles shipped with allinone (YAML files; this file makes them package data)."""
