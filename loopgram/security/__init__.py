"""Defences against prompt injection in what people send: the leak guard and its attack set."""
