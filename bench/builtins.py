"""Registers the built-in plugins: imports the packages whose modules decorate themselves into the registries.

Kept apart from `bench.plugins` (the Protocols and registries) so that the registries never import the
plugins that import them. Cheap: no model is built.
"""

from __future__ import annotations


def load_builtins() -> None:
    import bench.backbones
    import bench.data.datasets
    import bench.losses  # noqa: F401
