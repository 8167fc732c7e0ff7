"""What a node lets a run configuration make it do: its own allow-list, not the server's.

A run configuration arrives in every message from the server. A node trusts it for *what to
compute* (model name, training settings, which deletion to carry out) but decides for itself
*what code to import* and *which folders to touch*:

- ``plugins`` (modules imported before the run) must be allowed by the node: listed in its
  own ``node_config["plugins"]`` (comma-separated), in the environment variable
  ``FEDFORGET_PLUGINS`` of the node's process, or part of fedforget itself.
- Paths (``data.path``, ``data.data_dir``, the folder for verification pictures) must lie
  under a folder the node allows: its ``node-dir``, its ``node_config["data-dir"]`` or a
  folder in ``FEDFORGET_NODE_ROOTS`` (``os.pathsep``-separated). A real node with
  ``node-dir`` writes verification pictures only under ``<node-dir>/verification``, in
  folders it creates itself without following a symbolic link.

``fedforget simulate`` runs server and nodes in one process tree for one user, so it puts the
run's own plugins and folders into these variables for its simulated nodes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedforget.config import SimulationConfig
from fedforget.node import RequestError, own_folder

__all__ = [
    "NODE_DATA_DIR",
    "NODE_PLUGINS",
    "PLUGINS_ENV",
    "ROOTS_ENV",
    "NodePolicy",
    "NodeRefusalError",
    "simulation_environment",
]

PLUGINS_ENV = "FEDFORGET_PLUGINS"
ROOTS_ENV = "FEDFORGET_NODE_ROOTS"
NODE_PLUGINS = "plugins"
NODE_DATA_DIR = "data-dir"
NODE_DIR = "node-dir"
OWN_PACKAGE = "fedforget"
VERIFICATION_DIR = "verification"

log = logging.getLogger("fedforget.node")


class NodeRefusalError(PermissionError):
    """The run configuration asks the node for something it did not allow (one line)."""


def _split(text: str, separator: str) -> list[str]:
    return [part.strip() for part in text.split(separator) if part.strip()]


def _resolved(path: Path | str) -> Path:
    return Path(path).expanduser().resolve()


@dataclass(frozen=True)
class NodePolicy:
    """The modules a node may import and the folders it may read and write.

    Attributes
    ----------
    plugins : frozenset of str
        Modules the node imports when a run names them (besides fedforget's own).
    roots : tuple of Path
        Resolved folders under which the run may name data and output paths.
    node_dir : Path or None
        A real node's own folder; its verification pictures go under it.
    """

    plugins: frozenset[str]
    roots: tuple[Path, ...]
    node_dir: Path | None = None

    @classmethod
    def from_node(
        cls, node_config: Mapping[str, object], environ: Mapping[str, str] | None = None
    ) -> NodePolicy:
        """The policy from the node's own configuration and its process environment."""
        env = os.environ if environ is None else environ
        plugins = _split(str(node_config.get(NODE_PLUGINS, "")), ",")
        plugins += _split(env.get(PLUGINS_ENV, ""), ",")
        roots = [str(node_config[key]) for key in (NODE_DIR, NODE_DATA_DIR) if key in node_config]
        roots += _split(env.get(ROOTS_ENV, ""), os.pathsep)
        node_dir = _resolved(str(node_config[NODE_DIR])) if NODE_DIR in node_config else None
        return cls(frozenset(plugins), tuple(_resolved(r) for r in roots), node_dir)

    def allows_module(self, module: str) -> bool:
        """Whether the node imports ``module``: its own allow-list, or fedforget's own code."""
        return module in self.plugins or module.split(".")[0] == OWN_PACKAGE

    def allows_path(self, path: Path | str) -> bool:
        """Whether ``path`` lies under one of the node's allowed folders."""
        target = _resolved(path)
        return any(target == root or target.is_relative_to(root) for root in self.roots)

    def check_plugins(self, modules: Iterable[str]) -> None:
        """Raise :class:`NodeRefusalError` for the first module the node did not allow."""
        for module in modules:
            if not self.allows_module(module):
                raise NodeRefusalError(
                    f"this node does not import '{module}': it is not in its node config "
                    f"'{NODE_PLUGINS}' nor in ${PLUGINS_ENV}"
                )

    def check_data_paths(self, config: SimulationConfig) -> None:
        """Raise :class:`NodeRefusalError` when the run names a data path the node did not allow."""
        named = (("data.path", config.data.path), ("data.data_dir", config.data.data_dir))
        for name, path in named:
            if path is not None and not self.allows_path(path):
                raise NodeRefusalError(
                    f"this node does not read or write {name} '{path}': it is outside the "
                    f"folders it allows (node config '{NODE_DATA_DIR}', ${ROOTS_ENV})"
                )

    def verification_folder(self, requested: str, run_id: int, client: str) -> Path | None:
        """Where this node writes ``client``'s verification pictures, or ``None``: nowhere.

        A real node writes under its own ``<node-dir>/verification/run-<id>/<client>``,
        created here as real folders: a link or a file in their place leaves the pictures
        unwritten (the report still travels) rather than written elsewhere. Otherwise the
        folder the server names is used only when the node allows it.
        """
        if self.node_dir is not None:
            try:
                return own_folder(self.node_dir, VERIFICATION_DIR, f"run-{run_id}", client)
            except (RequestError, OSError) as err:
                log.warning("verification pictures not written: %s", err)
                return None
        if requested and self.allows_path(requested):
            return Path(requested) / client
        return None


def simulation_environment(config: SimulationConfig, out_dir: Path | None) -> dict[str, str]:
    """The variables that let a simulation's own nodes import its plugins and use its folders.

    The user who starts ``fedforget simulate`` runs both the server and the simulated nodes,
    so the nodes may follow that user's configuration.
    """
    roots = [p for p in (config.data.path, config.data.data_dir, out_dir) if p is not None]
    return {
        PLUGINS_ENV: ",".join(config.plugins),
        ROOTS_ENV: os.pathsep.join(str(_resolved(p)) for p in roots),
    }
