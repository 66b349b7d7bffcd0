"""Where every value of a catalog stands (file and line), so a problem names its place."""

from __future__ import annotations

from nextbest.errors import CatalogProblem, Severity

__all__ = ["SourceMap"]


class SourceMap:
    """Maps a merged-catalog path such as ``$.offers[3].value`` to (file, line)."""

    def __init__(self) -> None:
        self._lines: dict[str, tuple[str, int]] = {}

    def add(self, path: str, file: str, line: int) -> None:
        self._lines.setdefault(path, (file, line))

    def where(self, path: str) -> tuple[str, int | None]:
        probe = path
        while probe:
            hit = self._lines.get(probe)
            if hit is not None:
                return hit
            cut = max(probe.rfind("."), probe.rfind("["))
            if cut <= 0:
                break
            probe = probe[:cut]
        first = next(iter(self._lines.values()), ("<catalog>", 0))
        return first[0], None

    def problem(
        self, path: str, reason: str, severity: Severity = Severity.ERROR
    ) -> CatalogProblem:
        file, line = self.where(path)
        return CatalogProblem(file, line, path, reason, severity)

    def warning(self, path: str, reason: str) -> CatalogProblem:
        return self.problem(path, reason, Severity.WARNING)
