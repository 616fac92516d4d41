"""2D structure drawings (RDKit SVG) for the web page and the search API.

Pure RDKit: no Ray, no web framework. Drawings are deterministic for a given SMILES and size, so callers may
cache them (see `DrawingCache`).
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Optional

from rdkit import Chem, RDLogger
from rdkit.Chem.Draw import rdMolDraw2D

RDLogger.DisableLog("rdApp.*")  # parse failures are returned as None, not printed

DEFAULT_WIDTH = 260
DEFAULT_HEIGHT = 200


def mol_to_svg(smiles: str, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> Optional[str]:
    """SMILES -> an SVG document of its 2D structure, or None if RDKit cannot parse it.

    The SVG has no XML prolog (ready to inline in HTML), a white background and no text other than atom labels:
    the input string never appears in the output.
    """
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
    if mol is None:
        return None
    try:
        mol = rdMolDraw2D.PrepareMolForDrawing(mol, kekulize=True)
    except Exception:  # kekulization can fail for odd aromatic systems: draw without it
        mol = rdMolDraw2D.PrepareMolForDrawing(mol, kekulize=False)
    drawer = rdMolDraw2D.MolDraw2DSVG(int(width), int(height))
    options = drawer.drawOptions()
    options.clearBackground = True
    options.addStereoAnnotation = False
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


class DrawingCache:
    """A small thread-safe LRU cache of SVG drawings keyed by (SMILES, width, height)."""

    def __init__(self, max_entries: int = 4096):
        self.max_entries = int(max_entries)
        self._items: OrderedDict[tuple[str, int, int], Optional[str]] = OrderedDict()
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def get(self, smiles: str, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> Optional[str]:
        key = (smiles, int(width), int(height))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        svg = mol_to_svg(smiles, width, height)
        with self._lock:
            self.misses += 1
            if self.max_entries > 0:
                self._items[key] = svg
                while len(self._items) > self.max_entries:
                    self._items.popitem(last=False)
        return svg

    def __len__(self) -> int:
        return len(self._items)
