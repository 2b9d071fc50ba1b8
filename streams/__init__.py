"""The Faust stream worker: one package per domain, thin agents over plain logic."""
