"""Targets: turn behaviour into what the image model learns — normalized item factors and pseudo-classes."""
