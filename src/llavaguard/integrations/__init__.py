"""Llavaguard inside other libraries' pipelines (diffusers), each module importing its
library only when used."""
